// Overview: per pool, keys by state, requests/s and error rate now, the last hour and day.
import { onTransition } from './api.js';
import { barChart, grid, totals } from './chart.js';
import { badge, clear, debounce, h, num, params, pct, STATES } from './dom.js';

function stateBar(states, total) {
  const svg = h('svg:svg', { viewBox: '0 0 100 6', preserveAspectRatio: 'none', class: 'statebar', 'aria-hidden': 'true' });
  let x = 0;
  for (const s of STATES) {
    const n = states[s] || 0;
    if (!n || !total) continue;
    const w = (n / total) * 100;
    svg.append(h('svg:rect', { x, y: 0, width: w, height: 6, class: `f-${s}` }));
    x += w;
  }
  return svg;
}

async function usage(api, pool, resolution, seconds, now) {
  const r = await api('GET', `/usage${params({ pool, resolution, since: Math.floor(now - seconds), until: Math.ceil(now) })}`);
  return r.buckets || [];
}

function poolCard(pool, api) {
  const stats = h('dl', { class: 'stats' });
  const chartBox = h('div', { class: 'chartwrap' }, h('p', { class: 'muted' }, 'Loading usage…'));
  let span = 'hour';
  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  const card = h('section', { class: 'card pool', 'data-pool': pool.name });
  const counts = h('ul', { class: 'counts' });

  function fillCounts(p) {
    clear(counts);
    for (const s of STATES) {
      counts.append(h('li', null, h('a', { href: `#/keys${params({ pool: p.name, state: s })}`, 'data-state': s },
        badge(s), h('strong', { class: 'n' }, num((p.states || {})[s] || 0)))));
    }
  }

  async function load() {
    const now = Date.now() / 1000;
    let minute; let hour;
    try {
      [minute, hour] = await Promise.all([usage(api, pool.name, 'minute', 3600, now), usage(api, pool.name, 'hour', 86400, now)]);
    } catch (e) {
      clear(chartBox).append(h('p', { class: 'error' }, `Usage unavailable: ${e.message}`));
      return;
    }
    const mslots = grid(minute, 60, now, 60);
    const hslots = grid(hour, 3600, now, 24);
    const recent = totals(mslots, 300, now);
    const day = totals(hslots, 86400, now);
    clear(stats).append(
      h('div', null, h('dt', null, 'requests/s'), h('dd', { 'data-stat': 'rps' }, recent.rate.toFixed(2)), h('dd', { class: 'muted small' }, 'last 5 min')),
      h('div', null, h('dt', null, 'error rate'), h('dd', { 'data-stat': 'errors' }, pct(recent.errorRate)), h('dd', { class: 'muted small' }, 'last 5 min')),
      h('div', null, h('dt', null, 'requests'), h('dd', { 'data-stat': 'requests-day' }, num(day.requests)), h('dd', { class: 'muted small' }, 'last 24 h')),
      h('div', null, h('dt', null, 'tokens used'), h('dd', { 'data-stat': 'tokens-day' }, num(day.tokens)), h('dd', { class: 'muted small' }, 'last 24 h')));
    const draw = () => {
      clear(chartBox).append(span === 'hour'
        ? barChart(mslots, 60, `${pool.name}: requests per minute by outcome, last hour`)
        : barChart(hslots, 3600, `${pool.name}: requests per hour by outcome, last day`));
      for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.span === span));
    };
    clear(tabs).append(
      h('button', { type: 'button', role: 'tab', class: 'tab', 'data-span': 'hour', onclick: () => { span = 'hour'; draw(); } }, 'Last hour'),
      h('button', { type: 'button', role: 'tab', class: 'tab', 'data-span': 'day', onclick: () => { span = 'day'; draw(); } }, 'Last day'));
    draw();
  }

  const bar = h('div', { class: 'barwrap' });
  function update(p) {
    fillCounts(p);
    clear(bar).append(stateBar(p.states || {}, p.total));
    card.querySelector('.eligible').textContent = `${num(p.eligible)} of ${num(p.total)} keys eligible`;
  }
  card.append(
    h('header', null,
      h('h2', null, h('a', { href: `#/keys${params({ pool: pool.name })}` }, pool.name)),
      h('span', { class: 'muted small' }, `${pool.provider || ''} · ${pool.base_url || ''}`),
      h('span', { class: 'eligible' })),
    bar, counts, stats, tabs, chartBox);
  update(pool);
  load();
  return { card, update, load };
}

export async function renderOverview(main, { api }) {
  main.append(h('h1', null, 'Overview'));
  const list = h('div', { class: 'pools' });
  main.append(list);
  const r = await api('GET', '/pools');
  const cards = new Map();
  if (!r.data.length) list.append(h('p', { class: 'muted' }, 'No pools configured.'));
  for (const p of r.data) {
    const c = poolCard(p, api);
    cards.set(p.name, c);
    list.append(c.card);
  }
  const refreshCounts = debounce(async () => {
    try {
      const fresh = await api('GET', '/pools');
      for (const p of fresh.data) if (cards.has(p.name)) cards.get(p.name).update(p);
    } catch { /* the next event or tick tries again */ }
  }, 500);
  const off = onTransition(refreshCounts);
  const tick = setInterval(() => { refreshCounts(); for (const c of cards.values()) c.load(); }, 30000);
  return () => { off(); clearInterval(tick); };
}
