// REST client: bearer token from sessionStorage, problem+json errors.
const TOKEN_KEY = 'telkeys.token';
export const SCOPES = ['CREATE_CALL_TOKEN', 'READ_CALL_TOKEN', 'READ_TEAM_APPS'];

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// decodeJwt reads a JWT's claims without verifying it (the server does).
export function decodeJwt(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return claims && typeof claims === 'object' && typeof claims.role === 'string' ? claims : null;
  } catch {
    return null;
  }
}

async function toError(res) {
  let detail = `The server answered ${res.status} ${res.statusText}`.trim();
  let code = `http_${res.status}`;
  try {
    const p = await res.json();
    if (p && typeof p.detail === 'string' && p.detail) detail = p.detail;
    if (p && typeof p.code === 'string') code = p.code;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(res.status, code, detail);
}

export async function request(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (auth) headers.Authorization = `Bearer ${session.token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'Could not reach the server. Check the connection and try again.');
  }
  if (res.ok) return res.status === 204 ? null : res.json();
  const err = await toError(res);
  if (res.status === 401 && auth) {
    err.handled = true;
    onUnauthorized(err);
  }
  throw err;
}

export const api = {
  get: (path, opts) => request('GET', path, undefined, opts),
  put: (path, body) => request('PUT', path, body),
  post: (path, body) => request('POST', path, body),
  patch: (path, body) => request('PATCH', path, body),
  del: (path) => request('DELETE', path),
};

export const teamPath = (team) => `/v1/teams/${encodeURIComponent(team)}`;
