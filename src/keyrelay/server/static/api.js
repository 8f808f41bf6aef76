// The admin API client: same-origin fetch with the session cookie (HttpOnly, so script never
// sees it) and the CSRF header on every write.
const BASE = '/admin/api/v1';

export const session = { name: null, csrf: null };
let onSignedOut = () => {};
export function whenSignedOut(fn) { onSignedOut = fn; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let r;
  try {
    r = await fetch(BASE + path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'The gateway did not answer.');
  }
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (!r.ok) {
    const e = (data && data.error) || {};
    if (r.status === 401 && path !== '/session') { session.name = null; session.csrf = null; onSignedOut(); }
    throw new ApiError(r.status, e.code || `http_${r.status}`, e.message || `HTTP ${r.status}`);
  }
  return data;
}

export async function signIn(token) {
  const r = await api('POST', '/session', { token });
  session.name = r.name;
  session.csrf = r.csrf;
  return r;
}

export async function whoAmI() {
  try {
    const r = await api('GET', '/session');
    session.name = r.name;
    session.csrf = r.csrf;
    return r;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export async function signOut() {
  try { await api('DELETE', '/session'); } finally { session.name = null; session.csrf = null; }
}

// The live feed: one EventSource, its transitions handed to whoever listens.
const listeners = new Set();
let source = null;
let statusCb = () => {};
export function onTransition(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function onLiveStatus(fn) { statusCb = fn; }

export function startLive() {
  if (source) return;
  source = new EventSource(`${BASE}/events/stream`);
  source.addEventListener('open', () => statusCb('live'));
  source.addEventListener('error', () => statusCb(source && source.readyState === 2 ? 'off' : 'reconnecting'));
  source.addEventListener('transition', (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    for (const fn of listeners) {
      try { fn(ev); } catch (e) { console.error(e); }
    }
  });
}

export function stopLive() {
  if (source) source.close();
  source = null;
  statusCb('off');
}
