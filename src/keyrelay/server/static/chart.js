// A stacked bar chart of requests by outcome, drawn as inline SVG (no library).
import { h, num, OUTCOMES } from './dom.js';

const W = 640;
const H = 200;
const PAD = { l: 44, r: 8, t: 10, b: 24 };

function pad(n) { return String(n).padStart(2, '0'); }
function label(t, step) {
  const d = new Date(t * 1000);
  return step >= 3600 ? `${pad(d.getDate())}/${pad(d.getMonth() + 1)} ${pad(d.getHours())}h` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// Buckets -> a dense grid of `n` slots of `step` seconds ending at `until`.
export function grid(buckets, step, until, n) {
  const start = Math.floor(until / step) * step - (n - 1) * step;
  const slots = Array.from({ length: n }, (_, i) => ({ t: start + i * step, requests: 0, outcomes: {}, tokens: 0 }));
  for (const b of buckets || []) {
    const i = Math.floor((b.t - start) / step);
    if (i < 0 || i >= n) continue;
    const s = slots[i];
    s.requests += b.requests || 0;
    s.tokens += (b.prompt_tokens || 0) + (b.completion_tokens || 0);
    for (const [o, c] of Object.entries(b.outcomes || {})) s.outcomes[o] = (s.outcomes[o] || 0) + c;
  }
  return slots;
}

export function outcomesIn(slots) {
  const seen = new Set();
  for (const s of slots) for (const [o, c] of Object.entries(s.outcomes)) if (c > 0) seen.add(o);
  const known = OUTCOMES.filter((o) => seen.has(o));
  return known.concat([...seen].filter((o) => !OUTCOMES.includes(o)).sort());
}

// The smallest of 1, 2, 5, 10, 20, 50… at least n: round numbers on the axis.
function niceCeil(n) {
  const p = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= n);
}

export function barChart(slots, step, title) {
  const outcomes = outcomesIn(slots);
  const max = niceCeil(Math.max(1, ...slots.map((s) => Math.max(s.requests, Object.values(s.outcomes).reduce((a, b) => a + b, 0)))));
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const bw = iw / slots.length;
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  svg.append(h('svg:title', null, title));
  for (const f of max % 2 === 0 ? [0, 0.5, 1] : [0, 1]) {
    const y = PAD.t + ih - f * ih;
    svg.append(h('svg:line', { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: 'grid' }));
    svg.append(h('svg:text', { x: PAD.l - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, num(max * f)));
  }
  slots.forEach((s, i) => {
    let y = PAD.t + ih;
    const x = PAD.l + i * bw;
    const g = h('svg:g', null);
    const parts = outcomes.map((o) => `${o} ${num(s.outcomes[o] || 0)}`).join(', ');
    g.append(h('svg:title', null, `${label(s.t, step)}: ${num(s.requests)} requests${parts ? ` (${parts})` : ''}`));
    g.append(h('svg:rect', { x, y: PAD.t, width: Math.max(bw, 1), height: ih, class: 'hover' }));
    for (const o of outcomes) {
      const c = s.outcomes[o] || 0;
      if (!c) continue;
      const bh = (c / max) * ih;
      y -= bh;
      g.append(h('svg:rect', { x: x + bw * 0.1, y, width: Math.max(bw * 0.8, 1), height: bh, class: `o-${o}` }));
    }
    svg.append(g);
  });
  const ticks = 6;
  for (let k = 0; k < ticks; k++) {
    const i = Math.round((k * (slots.length - 1)) / (ticks - 1));
    const x = PAD.l + i * bw + bw / 2;
    svg.append(h('svg:text', { x, y: H - 6, class: 'axis', 'text-anchor': k === 0 ? 'start' : k === ticks - 1 ? 'end' : 'middle' }, label(slots[i].t, step)));
  }
  const legend = h('ul', { class: 'legend' }, outcomes.length
    ? outcomes.map((o) => h('li', null, h('span', { class: `swatch o-${o}` }), o))
    : h('li', { class: 'muted' }, 'no requests in this window'));
  return h('figure', { class: 'chartbox' }, svg, legend);
}

// Requests, errors and tokens over the last `seconds` of a grid.
export function totals(slots, seconds, now) {
  let requests = 0; let ok = 0; let tokens = 0; let clientErr = 0;
  for (const s of slots) {
    if (s.t < now - seconds) continue;
    requests += s.requests; tokens += s.tokens; ok += s.outcomes.ok || 0;
    clientErr += (s.outcomes.client_error || 0) + (s.outcomes.client_gone || 0);
  }
  const errors = Math.max(0, requests - ok - clientErr);
  return { requests, ok, errors, tokens, rate: requests / seconds, errorRate: requests ? errors / requests : null };
}
