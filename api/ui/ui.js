// DOM helpers: element builder, chips, times, the inline error, dialogs.
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// h builds an element; children that are strings become text nodes (never HTML).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'checked' || k === 'value') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

export function chips(list) {
  if (!list || list.length === 0) return [h('span', { class: 'muted' }, 'none')];
  return list.map((s) => h('span', { class: 'chip' }, s));
}

const localTime = (d) => d.toLocaleString(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

// timeEl shows an RFC 3339 time in the user's locale and time zone, named,
// with UTC on hover.
export function timeEl(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return document.createTextNode(String(iso));
  const utc = `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  return h('time', { datetime: iso, title: utc }, localTime(d));
}

// inWords is a duration, rounded to one unit: "45 s", "20 min", "3 h",
// "6 days". Hours up to 2 days: "36 h" says more than "2 days".
export function inWords(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (Math.round(s / 60) < 60) return `${Math.round(s / 60)} min`;
  if (Math.round(s / 3600) < 48) return `${Math.round(s / 3600)} h`;
  return plural(Math.round(s / 86400), 'day');
}

// untilEl shows how far away an RFC 3339 time is ("expires in 3 h" with
// prefix "expires in"), or passed ("expired") once it is, the time itself
// on hover.
export function untilEl(iso, prefix, passed, now = Date.now()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return document.createTextNode(String(iso));
  const text = d.getTime() <= now ? passed : `${prefix} ${inWords(d.getTime() - now)}`;
  return h('time', { datetime: iso, title: localTime(d) }, text);
}

export function emptyRow(cols, text) {
  return h('tr', {}, h('td', { colspan: cols, class: 'muted empty' }, text));
}

export const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

// The one #error element lives in the page, or inside the open dialog so
// that it is visible above the modal backdrop.
export function showError(message) {
  const el = $('#error');
  const open = $$('dialog[open]').pop();
  const slot = (open && $('.dialog-error', open)) || $('#error-home');
  if (el.parentNode !== slot) slot.append(el);
  el.textContent = '';
  el.textContent = message;
}

export function clearError() { $('#error').textContent = ''; }

// run performs a user action: success clears the error, failure shows it.
export async function run(fn) {
  try {
    const result = await fn();
    clearError();
    return result;
  } catch (e) {
    if (!e || !e.handled) showError((e && (e.detail || e.message)) || String(e));
    return undefined;
  }
}

const focusable = (el) => el && el.isConnected && !el.disabled && !el.closest('[hidden]');

// focusSafely focuses the first candidate still usable, else the panel title.
export function focusSafely(...candidates) {
  const el = candidates.find(focusable) || $('[role=tabpanel]:not([hidden]) h1');
  el?.focus();
}

const openers = new WeakMap();

// setupDialog wires a <dialog>: Cancel buttons close it, closing returns
// the inline error to the page, awaits onClose, then returns focus to the
// opener (or, if it is gone or disabled, to fallback()).
export function setupDialog(dialog, onClose, fallback = () => null) {
  for (const b of $$('button.cancel', dialog)) b.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', async () => {
    const err = $('#error');
    if (dialog.contains(err)) $('#error-home').append(err);
    const opener = openers.get(dialog);
    openers.delete(dialog);
    try {
      if (onClose) await onClose();
    } finally {
      if (opener !== null) focusSafely(opener, fallback());
    }
  });
}

export function openDialog(dialog, opener = document.activeElement) {
  openers.set(dialog, opener);
  if (!dialog.open) dialog.showModal();
}

// handOver closes one dialog and opens another that returns focus to the
// first one's opener.
export function handOver(from, to) {
  const opener = openers.get(from);
  openers.set(from, null);
  from.close();
  openDialog(to, opener);
}
