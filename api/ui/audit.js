// Audit: the event history, paged by stream sequence, filterable by team.
import { api } from './api.js';
import { $, h, timeEl, emptyRow, run, focusSafely } from './ui.js';

let next = null;
let team = '';

export function resetAudit() {
  next = null;
  team = '';
  $('#audit-team').value = '';
  $('#audit-table tbody').replaceChildren();
  $('#audit-more').hidden = true;
}

function row(e) {
  const actor = e.actor ? `${e.actor.sub ?? '?'} (${e.actor.role ?? '?'})` : '';
  return h('tr', {},
    h('td', { class: 'num' }, String(e.seq)),
    h('td', {}, timeEl(e.time)),
    h('td', {}, actor),
    h('td', {}, e.type),
    h('td', {}, e.team ?? '—'),
    h('td', {}, h('code', { class: 'payload' }, JSON.stringify(e.payload ?? {}, null, 1))));
}

// loadAudit fetches the first page, or with more=true the page after the last one.
export async function loadAudit(more = false) {
  const params = new URLSearchParams({ limit: '50' });
  if (team) params.set('team', team);
  if (more && next != null) params.set('after', String(next));
  const page = await api.get(`/v1/audit/events?${params}`);
  const tbody = $('#audit-table tbody');
  const rows = page.events.map(row);
  if (more) tbody.append(...rows);
  else tbody.replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No events.')]));
  next = page.next ?? null;
  $('#audit-more').hidden = next == null;
}

export function initAudit() {
  $('#audit-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#audit-team');
    if (!input.reportValidity()) return;
    team = input.value.trim();
    run(() => loadAudit(false));
  });
  $('#audit-more').addEventListener('click', async () => {
    await run(() => loadAudit(true));
    if ($('#audit-more').hidden) focusSafely($('#audit-table').parentElement);
  });
}
