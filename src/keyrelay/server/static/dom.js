// DOM helpers. Text always goes in as text nodes (never innerHTML): nothing the API returns
// can become markup.
const SVG = 'http://www.w3.org/2000/svg';

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (!svg && (k === 'value' || k === 'checked' || k === 'disabled')) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export const STATES = ['active', 'cooling', 'exhausted', 'invalid', 'disabled'];
export const OUTCOMES = ['ok', 'client_error', 'rate_limited', 'quota_exhausted', 'invalid_key',
  'upstream_fault', 'network_error', 'client_gone'];

export function badge(state) {
  return h('span', { class: `badge s-${STATES.includes(state) ? state : 'other'}` }, state);
}

const nf = new Intl.NumberFormat();
export function num(n) {
  return n === null || n === undefined ? '—' : nf.format(n);
}

export function pct(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return `${(x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0)} %`;
}

function pad(n) { return String(n).padStart(2, '0'); }

export function time(t) {
  if (t === null || t === undefined) return '—';
  const d = new Date(t * 1000);
  const today = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return hm;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

export function ago(t, now = Date.now() / 1000) {
  if (t === null || t === undefined) return '—';
  const s = Math.round(t - now);
  const a = Math.abs(s);
  if (a < 5) return 'just now';
  const txt = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h`
    : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `in ${txt}` : `${txt} ago`;
}

// A key's state, why, and until when: a cooling key's rest, a retired key's next recheck.
export function stateCell(k) {
  const word = k.state === 'cooling' ? 'until' : 'recheck';
  return h('div', { class: 'state' }, badge(k.state),
    k.reason ? h('span', { class: 'reason' }, k.reason) : null,
    k.until && ['cooling', 'exhausted', 'invalid'].includes(k.state) ? h('span', { class: `until u-${k.state}`, title: time(k.until), 'data-until': k.until, 'data-word': word },
      `${word} ${time(k.until)} (${ago(k.until)})`) : null);
}

export function params(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function debounce(fn, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// A modal confirmation; resolves true/false.
export function confirmDialog(title, text, action = 'Confirm', danger = false) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'confirm', 'aria-label': title });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    append(dlg, [
      h('h2', null, title), h('p', null, text),
      h('div', { class: 'row end' },
        h('button', { type: 'button', class: 'btn', onclick: () => done(false) }, 'Cancel'),
        h('button', { type: 'button', class: danger ? 'btn danger' : 'btn primary', 'data-confirm': '', onclick: () => done(true) }, action)),
    ]);
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

export function toast(text, kind = 'info') {
  let box = document.getElementById('toasts');
  if (!box) { box = h('div', { id: 'toasts', role: 'status' }); document.body.append(box); }
  const t = h('div', { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), 5000);
}
