// Settings → API Keys: stats, leak banner, key list, create and roll
// (secret shown once), disable/enable, delete.
import { api, teamPath } from './api.js';
import { $, $$, h, chips, timeEl, untilEl, emptyRow, plural, run, setupDialog, openDialog, handOver } from './ui.js';

let team = null;
let stats = null;
const byId = new Map(); // key id → key as listed, for the actions
let pendingDelete = null;
let pendingRoll = null; // the key the roll dialog is for
let deleted = false;

export function resetKeys() {
  team = null;
  stats = null;
  byId.clear();
  pendingDelete = null;
  pendingRoll = null;
  $('#keys-table tbody').replaceChildren();
  renderLeaks([]);
  $('#api-keys-content').hidden = true;
  $('#api-keys-disabled').hidden = true;
}

export async function loadKeys(forTeam) {
  if (forTeam !== undefined) team = forTeam;
  if (!team) throw new Error('Your token names no team, so there are no API keys to show.');
  const cfg = await api.get(`${teamPath(team)}/api-access`);
  if (!cfg.enabled) return showDisabled();
  let list;
  try {
    list = await api.get(`${teamPath(team)}/api-keys`);
  } catch (e) {
    if (e.code === 'team_api_disabled') return showDisabled();
    throw e;
  }
  render(list);
}

function showDisabled() {
  stats = null;
  byId.clear();
  $('#keys-table tbody').replaceChildren();
  renderLeaks([]);
  $('#api-keys-content').hidden = true;
  $('#api-keys-disabled').hidden = false;
  $('#tab-api-keys').hidden = true; // the tab shows only while access is enabled
  for (const d of $$('#create-dialog, #roll-dialog, #confirm-dialog')) if (d.open) d.close();
}

function render({ keys, stats: s, leaks }) {
  stats = s;
  $('#api-keys-disabled').hidden = true;
  $('#tab-api-keys').hidden = false;
  $('#api-keys-content').hidden = false;
  $('#stat-keys .stat-value').textContent = `${s.keys} / ${s.max_keys}`;
  $('#stat-requests .stat-value').textContent = s.max_requests_per_day == null
    ? `${s.requests_today} (no limit)`
    : `${s.requests_today} / ${s.max_requests_per_day}`;
  $('#stat-scopes .stat-value').replaceChildren(...chips(s.available_scopes));

  let reason = '';
  if (s.keys >= s.max_keys) reason = `This team has reached its maximum of ${plural(s.max_keys, 'API key')}.`;
  else if (!s.available_scopes.length) reason = 'No scopes are available to this team: a superadmin must allow at least one.';
  const create = $('#create-key');
  const hadFocus = document.activeElement === create;
  create.disabled = reason !== '';
  $('#create-disabled-reason').textContent = reason;
  $('#create-disabled-reason').hidden = reason === '';
  if (hadFocus && create.disabled) $('#panel-api-keys h1').focus();

  renderLeaks(leaks ?? []);
  byId.clear();
  const now = Date.now();
  const rows = keys.map((k) => {
    byId.set(k.id, k);
    return keyRow(k, now);
  });
  $('#keys-table tbody').replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No API keys yet.')]));
}

// keyRow is one key. Tags by its name mark it replaced (rolled, in its grace
// period), disabled or leaked. A key rolled before or expired cannot be
// rolled, and an expired one can only be deleted.
function keyRow(k, now) {
  const expired = k.expired || (k.expires_at != null && Date.parse(k.expires_at) <= now);
  const tag = (text, cls, title) => h('span', { class: `tag ${cls}`, title }, text);
  return h('tr', { class: k.enabled ? null : 'off' },
    h('th', { scope: 'row' }, k.name,
      k.replaced_by && tag('replaced', 'muted', 'Rolled: a new key replaces this one'),
      !k.enabled && tag('disabled', 'muted', 'Disabled: requests with this key are refused'),
      k.leak && tag('leaked', 'danger', `Found in public at ${k.leak.url}`)),
    h('td', {}, h('span', { class: 'chips' }, chips(k.scopes))),
    h('td', {}, timeEl(k.created_at)),
    h('td', {}, k.last_used_at ? timeEl(k.last_used_at) : 'never'),
    h('td', { class: expired ? 'expired' : null }, k.expires_at ? untilEl(k.expires_at, 'expires in', 'expired', now) : 'never'),
    h('td', {}, h('code', {}, k.masked)),
    h('td', { class: 'cell-actions' },
      !expired && !k.replaced_by && h('button', { type: 'button', class: 'small', 'data-roll': k.id, 'aria-label': `Roll key ${k.name}` }, 'Roll'),
      !expired && h('button', { type: 'button', class: 'small', 'data-toggle': k.id, 'aria-label': `${k.enabled ? 'Disable' : 'Enable'} key ${k.name}` }, k.enabled ? 'Disable' : 'Enable'),
      h('button', { type: 'button', class: 'danger small', 'data-delete': k.id, 'aria-label': `Delete key ${k.name}` }, 'Delete')));
}

// renderLeaks names each leak report in the banner, newest first. Server
// strings go in as text; a URL becomes a link only if it is http(s).
function renderLeaks(leaks) {
  const items = [...leaks].reverse().map((l) => h('li', {},
    `Key "${l.name}" was found in public at `, linkTo(l.url), ' on ', timeEl(l.at),
    l.revoked ? ' and was revoked.' : ' and is marked leaked.'));
  $('#leak-list').replaceChildren(...items);
  $('#leak-banner').hidden = items.length === 0;
}

function linkTo(url) {
  let web = false;
  try { web = ['http:', 'https:'].includes(new URL(url).protocol); } catch { /* not a URL */ }
  return web ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url) : h('code', {}, url);
}

function openCreate() {
  if (!stats) return;
  const form = $('#create-form');
  form.reset();
  $('#create-scopes').replaceChildren(...stats.available_scopes.map((s) =>
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'scope', value: s }), ' ', h('span', { class: 'chip' }, s))));
  $('#create-submit').disabled = false;
  openDialog($('#create-dialog'), $('#create-key'));
}

async function submitCreate(ev) {
  ev.preventDefault();
  const nameInput = $('#key-name');
  const boxes = $$('input[name=scope]', $('#create-form'));
  const name = nameInput.value.trim();
  const scopes = boxes.filter((b) => b.checked).map((b) => b.value);
  nameInput.setCustomValidity(name ? '' : 'Enter a name.');
  boxes[0]?.setCustomValidity(scopes.length ? '' : 'Select at least one scope.');
  if (!$('#create-form').reportValidity()) return;
  const submit = $('#create-submit');
  submit.disabled = true;
  await run(async () => {
    const created = await api.post(`${teamPath(team)}/api-keys`, { name, scopes });
    showSecret($('#create-dialog'), created);
  });
  submit.disabled = false;
}

// showSecret hands over from a dialog to the secret dialog, showing the
// key just made (with a note, for a roll).
function showSecret(from, created, note = '') {
  // The plaintext goes to exactly one place: the secret dialog's input.
  $('#secret-value').value = created.key;
  created.key = '';
  $('#secret-note').textContent = note;
  $('#secret-note').hidden = !note;
  $('#copy-status').textContent = '';
  handOver(from, $('#secret-dialog'));
}

function openRoll(btn) {
  const k = byId.get(btn.dataset.roll);
  if (!k) return;
  pendingRoll = k;
  $('#roll-form').reset();
  $('#roll-title').textContent = `Roll API key ${k.name}`;
  $('#roll-text').textContent = `A new key with the same name and scopes replaces ${k.name} (${k.masked}). Its secret is shown once.`;
  $('#roll-submit').disabled = false;
  openDialog($('#roll-dialog'), btn);
}

async function submitRoll(ev) {
  ev.preventDefault();
  const k = pendingRoll;
  const choice = $('input[name=grace]:checked', $('#roll-form'));
  if (!k || !choice) return;
  const grace = Number(choice.value);
  const when = choice.parentElement.textContent.trim().toLowerCase(); // "in 1 hour"
  const submit = $('#roll-submit');
  submit.disabled = true;
  await run(async () => {
    const rolled = await api.post(`${teamPath(team)}/api-keys/${encodeURIComponent(k.id)}/roll`, { grace_seconds: grace });
    showSecret($('#roll-dialog'), rolled, grace === 0
      ? `It replaces ${k.name} (${k.masked}), which has stopped working.`
      : `It replaces ${k.name} (${k.masked}), which stops working ${when}.`);
  });
  submit.disabled = false;
}

// toggleKey disables or enables a key, then lists the keys again.
async function toggleKey(btn) {
  const k = byId.get(btn.dataset.toggle);
  if (!k) return;
  const hadFocus = document.activeElement === btn;
  btn.disabled = true;
  await run(async () => {
    await api.patch(`${teamPath(team)}/api-keys/${encodeURIComponent(k.id)}`, { enabled: !k.enabled });
    await loadKeys();
  });
  btn.disabled = false;
  // The row is drawn anew: the focus goes to its new toggle.
  if (hadFocus) $(`button[data-toggle="${CSS.escape(k.id)}"]`)?.focus();
}

function clearBoxValidity(ev) {
  if (ev.target.matches('input[name=scope]')) $('input[name=scope]', $('#create-form'))?.setCustomValidity('');
  if (ev.target.id === 'key-name') ev.target.setCustomValidity('');
}

async function copySecret() {
  const value = $('#secret-value').value;
  const status = $('#copy-status');
  if (!value) return;
  let ok = false;
  try {
    if (!navigator.clipboard) throw new Error('no clipboard API');
    await navigator.clipboard.writeText(value);
    ok = true;
  } catch {
    // Fallback: a temporary textarea inside the modal dialog, removed at once.
    const ta = h('textarea', { readonly: true, class: 'offscreen', 'aria-hidden': 'true' });
    ta.value = value;
    $('#secret-dialog').append(ta);
    ta.select();
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.value = '';
    ta.remove();
    $('#secret-value').focus();
  }
  status.textContent = ok ? 'Copied' : 'Copy failed: select the key and copy it yourself.';
}

function onTableClick(ev) {
  const btn = ev.target.closest('button');
  if (btn?.dataset.roll) return openRoll(btn);
  if (btn?.dataset.toggle) return toggleKey(btn);
  if (!btn?.dataset.delete) return;
  pendingDelete = btn.dataset.delete;
  $('#confirm-text').textContent = `Delete key ${byId.get(pendingDelete)?.name ?? pendingDelete}? It stops working immediately.`;
  $('#confirm-delete').disabled = false;
  openDialog($('#confirm-dialog'), btn);
}

async function confirmDelete() {
  const id = pendingDelete;
  if (!id) return;
  const btn = $('#confirm-delete');
  btn.disabled = true;
  await run(async () => {
    await api.del(`${teamPath(team)}/api-keys/${encodeURIComponent(id)}`);
    deleted = true;
    $('#confirm-dialog').close(); // its close handler re-fetches the list
  });
  btn.disabled = false;
}

export function initKeys() {
  $('#create-key').addEventListener('click', openCreate);
  $('#create-form').addEventListener('submit', submitCreate);
  $('#create-form').addEventListener('input', clearBoxValidity);
  $('#roll-form').addEventListener('submit', submitRoll);
  $('#copy-secret').addEventListener('click', copySecret);
  $('#secret-close').addEventListener('click', () => $('#secret-dialog').close());
  $('#keys-table tbody').addEventListener('click', onTableClick);
  $('#confirm-cancel').addEventListener('click', () => $('#confirm-dialog').close());
  $('#confirm-delete').addEventListener('click', confirmDelete);
  const toCreate = () => $('#create-key');
  setupDialog($('#create-dialog'), null, toCreate);
  setupDialog($('#roll-dialog'), () => { pendingRoll = null; }, toCreate);
  setupDialog($('#confirm-dialog'), async () => {
    pendingDelete = null;
    if (deleted) {
      deleted = false;
      await run(() => loadKeys());
    }
  }, toCreate);
  // Closing the secret dialog (button or Escape) erases the plaintext.
  setupDialog($('#secret-dialog'), async () => {
    $('#secret-value').value = '';
    $('#secret-note').textContent = '';
    $('#copy-status').textContent = '';
    if (team) await run(() => loadKeys());
  }, toCreate);
}
