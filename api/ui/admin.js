// Admin settings → Teams → API Access Configuration, and the webrtc flag.
import { api, teamPath, SCOPES } from './api.js';
import { $, $$, h, chips, emptyRow, run, setupDialog, openDialog } from './ui.js';

const teams = new Map(); // team id → Team
let editing = null;
let saved = null; // team just saved, to refresh and refocus its row

export function resetAdmin() {
  teams.clear();
  editing = null;
  $('#teams-table tbody').replaceChildren();
}

export async function loadAdmin() {
  const [flags, list] = await Promise.all([api.get('/v1/platform/flags'), api.get('/v1/teams')]);
  renderFlag(flags.webrtc);
  renderTeams(list.teams);
}

function renderFlag(on) {
  $('#webrtc-toggle').checked = on;
  $('#webrtc-state').textContent = on ? 'on' : 'off';
}

function renderTeams(list) {
  teams.clear();
  const rows = list.map((t) => {
    teams.set(t.team, t);
    return h('tr', {},
      h('th', { scope: 'row' }, t.team),
      h('td', {}, h('span', { class: t.enabled ? 'badge on' : 'badge off' }, t.enabled ? 'Enabled' : 'Disabled')),
      h('td', {}, h('span', { class: 'chips' }, chips(t.allowed_scopes))),
      h('td', { class: 'num' }, String(t.max_keys)),
      h('td', { class: 'num' }, t.max_requests_per_day == null ? 'unlimited' : String(t.max_requests_per_day)),
      h('td', { class: 'num' }, String(t.keys)),
      h('td', { class: 'cell-actions' },
        h('button', { type: 'button', class: 'small', 'data-edit': t.team, 'aria-label': `Edit API access of team ${t.team}` }, 'Edit')));
  });
  $('#teams-table tbody').replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No team is configured yet.')]));
}

function openEditor(team, cfg, opener) {
  editing = team;
  $('#team-title').textContent = `API access of team ${team}`;
  $('#team-enabled').checked = Boolean(cfg.enabled);
  const allowed = new Set(cfg.allowed_scopes || []);
  $('#team-scopes').replaceChildren(...SCOPES.map((s) =>
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'team-scope', value: s, checked: allowed.has(s) }), ' ', h('span', { class: 'chip' }, s))));
  $('#team-max-keys').value = String(cfg.max_keys ?? 0);
  $('#team-max-requests').value = cfg.max_requests_per_day == null ? '' : String(cfg.max_requests_per_day);
  $('#team-save').disabled = false;
  openDialog($('#team-dialog'), opener);
}

async function saveTeam(ev) {
  ev.preventDefault();
  if (!editing) return;
  const maxReq = $('#team-max-requests').value.trim();
  const body = {
    enabled: $('#team-enabled').checked,
    allowed_scopes: $$('input[name=team-scope]').filter((b) => b.checked).map((b) => b.value),
    max_keys: Number($('#team-max-keys').value),
    max_requests_per_day: maxReq === '' ? null : Number(maxReq),
  };
  const save = $('#team-save');
  save.disabled = true;
  await run(async () => {
    await api.put(`${teamPath(editing)}/api-access`, body);
    saved = editing;
    $('#team-dialog').close(); // its close handler re-fetches the list
  });
  save.disabled = false;
}

async function onNewTeam(ev) {
  ev.preventDefault();
  const input = $('#new-team-id');
  const team = input.value.trim();
  if (!input.reportValidity()) return;
  await run(async () => {
    const cfg = teams.get(team) || (await api.get(`${teamPath(team)}/api-access`));
    openEditor(team, cfg, $('#new-team-submit'));
  });
}

async function onToggle() {
  const box = $('#webrtc-toggle');
  const wanted = box.checked;
  box.disabled = true;
  const done = await run(async () => {
    const flags = await api.put('/v1/platform/flags/webrtc', { enabled: wanted });
    renderFlag(flags.webrtc);
    return true;
  });
  if (!done) box.checked = !wanted;
  box.disabled = false;
}

export function initAdmin() {
  $('#teams-table tbody').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-edit]');
    const t = btn && teams.get(btn.dataset.edit);
    if (t) openEditor(t.team, t, btn);
  });
  $('#new-team-form').addEventListener('submit', onNewTeam);
  $('#team-form').addEventListener('submit', saveTeam);
  $('#webrtc-toggle').addEventListener('change', onToggle);
  setupDialog($('#team-dialog'), async () => {
    editing = null;
    if (!saved) return;
    // reset, not value = '': it also forgets that the user typed in the
    // box, so the now-empty required field is not shown as invalid.
    if ($('#new-team-id').value.trim() === saved) $('#new-team-form').reset();
    await run(loadAdmin);
  }, () => {
    const t = saved;
    saved = null;
    return t && $(`button[data-edit="${CSS.escape(t)}"]`);
  });
}
