// Settings → API Keys: stats, key list, create (secret shown once), delete.
import { api, teamPath } from './api.js';
import { $, $$, h, chips, timeEl, emptyRow, plural, run, setupDialog, openDialog, handOver } from './ui.js';

let team = null;
let stats = null;
const names = new Map(); // key id → name, for the confirmation text
let pendingDelete = null;
let deleted = false;

export function resetKeys() {
  team = null;
  stats = null;
  names.clear();
  pendingDelete = null;
  $('#keys-table tbody').replaceChildren();
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
  names.clear();
  $('#keys-table tbody').replaceChildren();
  $('#api-keys-content').hidden = true;
  $('#api-keys-disabled').hidden = false;
  $('#tab-api-keys').hidden = true; // the tab shows only while access is enabled
  for (const d of $$('#create-dialog, #confirm-dialog')) if (d.open) d.close();
}

function render({ keys, stats: s }) {
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

  names.clear();
  const rows = keys.map((k) => {
    names.set(k.id, k.name);
    return h('tr', {},
      h('th', { scope: 'row' }, k.name),
      h('td', {}, h('span', { class: 'chips' }, chips(k.scopes))),
      h('td', {}, timeEl(k.created_at)),
      h('td', {}, k.last_used_at ? timeEl(k.last_used_at) : 'never'),
      h('td', {}, h('code', {}, k.masked)),
      h('td', { class: 'cell-actions' },
        h('button', { type: 'button', class: 'danger small', 'data-delete': k.id, 'aria-label': `Delete key ${k.name}` }, 'Delete')));
  });
  $('#keys-table tbody').replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No API keys yet.')]));
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
    // The plaintext goes to exactly one place: the secret dialog's input.
    $('#secret-value').value = created.key;
    created.key = '';
    $('#copy-status').textContent = '';
    handOver($('#create-dialog'), $('#secret-dialog'));
  });
  submit.disabled = false;
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
  const btn = ev.target.closest('button[data-delete]');
  if (!btn) return;
  pendingDelete = btn.dataset.delete;
  $('#confirm-text').textContent = `Delete key ${names.get(pendingDelete) ?? pendingDelete}? It stops working immediately.`;
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
  $('#copy-secret').addEventListener('click', copySecret);
  $('#secret-close').addEventListener('click', () => $('#secret-dialog').close());
  $('#keys-table tbody').addEventListener('click', onTableClick);
  $('#confirm-cancel').addEventListener('click', () => $('#confirm-dialog').close());
  $('#confirm-delete').addEventListener('click', confirmDelete);
  const toCreate = () => $('#create-key');
  setupDialog($('#create-dialog'), null, toCreate);
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
    $('#copy-status').textContent = '';
    if (team) await run(() => loadKeys());
  }, toCreate);
}
