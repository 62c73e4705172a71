// telkeys web UI: sign-in, navigation, and the four pages.
import { api, session, decodeJwt, setUnauthorizedHandler } from './api.js';
import { $, $$, run, clearError, showError } from './ui.js';
import { initKeys, loadKeys, resetKeys } from './keys.js';
import { initAdmin, loadAdmin, resetAdmin } from './admin.js';
import { initAudit, loadAudit, resetAudit } from './audit.js';
import { initNodes, loadNodes, resetNodes } from './nodes.js';
import { loadOverview, resetOverview } from './overview.js';

const TABS = [
  // A superadmin lands on the overview, not on one of the settings pages.
  { id: 'tab-overview', roles: ['superadmin'], load: () => loadOverview() },
  { id: 'tab-api-keys', roles: ['member'], load: () => loadKeys(claims?.team ?? '') },
  { id: 'tab-admin-teams', roles: ['superadmin'], load: () => loadAdmin() },
  { id: 'tab-admin-nodes', roles: ['superadmin', 'auditor'], load: () => loadNodes() },
  { id: 'tab-audit', roles: ['superadmin', 'auditor'], load: () => loadAudit(false) },
];

let claims = null;

// takeFragmentToken accepts a token handed over as #token=... and removes
// it from the address bar and the history entry at once.
function takeFragmentToken() {
  if (!location.hash.startsWith('#token=')) return;
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(null, '', location.pathname + location.search);
  if (token) session.set(token.trim());
}

function currentClaims() {
  const token = session.token;
  if (!token) return null;
  const c = decodeJwt(token);
  if (!c) {
    session.clear();
    showSignIn('The stored token could not be read. Sign in again.');
    return null;
  }
  if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
    session.clear();
    showSignIn('Your token has expired. Sign in again.');
    return null;
  }
  return c;
}

function closeDialogs() {
  for (const d of $$('dialog[open]')) d.close();
}

function showSignIn(message = '') {
  claims = null;
  closeDialogs();
  resetKeys();
  resetAdmin();
  resetAudit();
  resetNodes();
  resetOverview();
  $('#app').hidden = true;
  $('#session').hidden = true;
  $('#whoami').textContent = '';
  $('#signin').hidden = false;
  $('#signin-message').textContent = message;
  $('#signin-message').hidden = !message;
  $('#token-input').focus();
}

function signOut(message = '') {
  session.clear();
  clearError();
  showSignIn(message);
}

function signIn(token) {
  const t = token.trim().replace(/^Bearer\s+/i, '');
  const c = decodeJwt(t);
  if (!c) {
    showError('That is not a valid token: paste the JWT the platform gave you (three base64url parts separated by dots).');
    return false;
  }
  session.set(t);
  clearError();
  start(c);
  return true;
}

function start(c) {
  claims = c;
  const role = String(c.role);
  const who = `${c.sub ?? 'unknown'} (${role}${c.team ? `, ${c.team}` : ''})`;
  $('#whoami').textContent = `Signed in as ${who}`;
  $('#session').hidden = false;
  $('#signin').hidden = true;
  $('#signin-message').textContent = '';
  $('#app').hidden = false;
  const allowed = TABS.filter((t) => t.roles.includes(role));
  for (const t of TABS) $(`#${t.id}`).hidden = !allowed.includes(t);
  // One page needs no tab bar (a member's): an empty-looking line otherwise.
  $('#tabs').hidden = allowed.length < 2;
  $('#no-access').hidden = allowed.length > 0;
  $('#no-access').textContent = allowed.length ? '' : `The role "${role}" has no pages in this interface.`;
  for (const p of $$('[role=tabpanel]')) p.hidden = true;
  if (allowed.length) selectTab(allowed[0].id, false);
}

function selectTab(id, focus) {
  for (const t of TABS) {
    const tab = $(`#${t.id}`);
    const selected = t.id === id;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`#${tab.getAttribute('aria-controls')}`).hidden = !selected;
  }
  if (focus) $(`#${id}`).focus();
  return run(TABS.find((t) => t.id === id).load);
}

function onTabKey(ev) {
  const tabs = $$('[role=tab]').filter((t) => !t.hidden);
  const i = tabs.indexOf(document.activeElement);
  if (i < 0) return;
  const moves = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: tabs.length - 1 };
  if (!(ev.key in moves)) return;
  ev.preventDefault();
  const to = tabs[(moves[ev.key] + tabs.length) % tabs.length];
  selectTab(to.id, true);
}

async function setupDevLogin() {
  let cfg;
  try {
    cfg = await api.get('/v1/ui-config', { auth: false });
  } catch {
    return; // no dev sign-in without the server saying so
  }
  if (!cfg || !cfg.dev_login) return;
  $('#dev-form').hidden = false;
  const role = $('#dev-role');
  const team = $('#dev-team');
  const sync = () => { team.required = role.value === 'member'; };
  role.addEventListener('change', sync);
  sync();
  $('#dev-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sync();
    if (!$('#dev-form').reportValidity()) return;
    const params = new URLSearchParams({ role: role.value });
    if (role.value === 'member') params.set('team', team.value.trim());
    const res = await run(() => api.get(`/v1/dev/token?${params}`, { auth: false }));
    if (res && res.token) signIn(res.token);
  });
}

function init() {
  setUnauthorizedHandler(() => signOut('The server did not accept your token (it may have expired or been revoked). Sign in again.'));
  takeFragmentToken();
  initKeys();
  initAdmin();
  initAudit();
  initNodes();
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#token-input');
    if (signIn(input.value)) input.value = '';
  });
  $('#sign-out').addEventListener('click', () => signOut('You are signed out.'));
  for (const t of TABS) $(`#${t.id}`).addEventListener('click', () => selectTab(t.id, false));
  $('#tabs').addEventListener('keydown', onTabKey);
  setupDevLogin();
  const c = currentClaims();
  if (c) start(c);
  else if ($('#signin').hidden) showSignIn();
}

init();
