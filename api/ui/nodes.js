// Admin settings → Nodes: the TelAPI nodes telkeys has heard from, how far
// each has applied the events, and whether it is current or stale.
import { api } from './api.js';
import { $, h, timeEl, emptyRow, run } from './ui.js';

export function resetNodes() {
  $('#nodes-table tbody').replaceChildren();
}

function row(n) {
  const current = n.state === 'current';
  return h('tr', {},
    h('th', { scope: 'row' }, String(n.name ?? '')),
    h('td', { class: 'num' }, String(n.applied_seq ?? '')),
    h('td', { class: 'num' }, String(n.lag ?? '')),
    h('td', {}, n.last_seen ? timeEl(n.last_seen) : '—'),
    h('td', {}, h('span', { class: current ? 'badge on' : 'badge off' }, String(n.state ?? 'unknown'))));
}

export async function loadNodes() {
  const res = await api.get('/v1/nodes');
  const rows = (res.nodes || []).map(row);
  $('#nodes-table tbody').replaceChildren(...(rows.length ? rows
    : [emptyRow(5, 'No TelAPI node has reported yet. Nodes report every second.')]));
}

export function initNodes() {
  $('#nodes-refresh').addEventListener('click', () => run(loadNodes));
}
