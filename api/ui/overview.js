// Admin settings → Overview, a superadmin's landing page: the platform at
// a glance, with the way to each settings page.
import { api } from './api.js';
import { $, plural } from './ui.js';

export function resetOverview() {
  for (const id of ['#ov-teams', '#ov-keys', '#ov-webrtc', '#ov-nodes']) $(`${id} .stat-value`).textContent = '';
}

export async function loadOverview() {
  const [flags, list, nodes] = await Promise.all([api.get('/v1/platform/flags'), api.get('/v1/teams'), api.get('/v1/nodes')]);
  const teams = list.teams || [];
  const enabled = teams.filter((t) => t.enabled).length;
  const keys = teams.reduce((n, t) => n + (t.keys || 0), 0);
  const all = nodes.nodes || [];
  const current = all.filter((n) => n.state === 'current').length;
  $('#ov-teams .stat-value').textContent = `${enabled} of ${plural(teams.length, 'team')} enabled`;
  $('#ov-keys .stat-value').textContent = plural(keys, 'key');
  $('#ov-webrtc .stat-value').textContent = flags.webrtc ? 'on' : 'off (no key works)';
  $('#ov-nodes .stat-value').textContent = `${current} current${all.length > current ? `, ${all.length - current} stale` : ''}`;
}
