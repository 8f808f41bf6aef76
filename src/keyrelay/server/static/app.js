// The dashboard's shell: sign-in, navigation (hash routes), the live feed's status.
import { api, onLiveStatus, session, signIn, signOut, startLive, stopLive, whenSignedOut, whoAmI } from './api.js';
import { clear, h, toast } from './dom.js';
import { renderEvents } from './events.js';
import { renderKey } from './key.js';
import { renderKeys } from './keys.js';
import { renderOverview } from './overview.js';
import { renderTokens } from './tokens.js';

const root = document.getElementById('app');
let cleanup = null;
let main = null;

const ROUTES = [
  ['overview', 'Overview', renderOverview],
  ['keys', 'Keys', renderKeys],
  ['events', 'Events', renderEvents],
  ['tokens', 'Tokens', renderTokens],
];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?', 2);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || '') };
}

function signInPage(message) {
  stopLive();
  if (cleanup) { cleanup(); cleanup = null; }
  const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true, spellcheck: 'false', placeholder: 'kr-…' });
  const err = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'signin card', method: 'post', action: '#' },
    h('h1', null, h('img', { src: 'icon.svg', alt: '', width: 28, height: 28 }), 'keyrelay'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('p', { class: 'muted small' }, 'Create one with ', h('code', null, 'keyrelay tokens create NAME --admin'), '. It is sent once; the browser keeps only a session cookie.'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Sign in'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    input.value = '';
    if (!token) return;
    err.textContent = '';
    try {
      await signIn(token);
      start();
    } catch (ex) {
      err.textContent = ex.status === 401 || ex.status === 403 ? 'That is not a valid admin token.' : ex.message;
      input.focus();
    }
  });
  clear(root).append(h('main', { class: 'signin-wrap' }, form));
  input.focus();
}

function shell() {
  const live = h('span', { class: 'live off', id: 'live', title: 'live feed' }, 'offline');
  onLiveStatus((s) => {
    live.className = `live ${s}`;
    live.textContent = s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : 'offline';
  });
  const nav = h('nav', { 'aria-label': 'main' },
    ROUTES.map(([id, title]) => h('a', { href: `#/${id}`, 'data-route': id }, title)));
  const out = h('button', { type: 'button', class: 'btn ghost', id: 'signout' }, 'Sign out');
  out.addEventListener('click', async () => {
    try { await signOut(); } catch { /* signed out anyway */ }
    location.hash = '';
    signInPage('Signed out.');
  });
  main = h('main', { id: 'main' });
  clear(root).append(
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/overview' }, h('img', { src: 'icon.svg', alt: '', width: 22, height: 22 }), 'keyrelay'),
      nav,
      h('div', { class: 'who' }, live, h('span', { class: 'muted', id: 'whoami' }, session.name || ''), out)),
    main);
}

async function route() {
  if (!main) return;
  if (cleanup) { cleanup(); cleanup = null; }
  const { parts, query } = parseHash();
  const page = parts[0] || 'overview';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.route === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clear(main);
  const view = page === 'keys' && parts[1] ? renderKey : (ROUTES.find(([id]) => id === page) || ROUTES[0])[2];
  try {
    cleanup = (await view(main, { parts, query, api })) || null;
  } catch (e) {
    if (e.status === 401) return;
    main.append(h('p', { class: 'error' }, e.message));
  }
}

function start() {
  shell();
  startLive();
  if (!location.hash) location.hash = '#/overview';
  route();
}

whenSignedOut(() => signInPage('Your session ended; sign in again.'));
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason && e.reason.status === 401) return;
  toast(String((e.reason && e.reason.message) || e.reason), 'error');
});

whoAmI().then((me) => (me ? start() : signInPage()), (e) => signInPage(e.message));
