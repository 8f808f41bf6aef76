// The keys table: server-side paging (cursor), filters, search, sort, bulk actions, live rows.
import { onTransition } from './api.js';
import { ago, clear, confirmDialog, debounce, h, num, params, stateCell, STATES, time, toast } from './dom.js';

const SORTS = [['id', 'id'], ['state', 'state'], ['since', 'since'], ['requests', 'requests'], ['failures', 'failures']];
const ACTIONS = {
  disable: ['Disable', 'They stop taking traffic until enabled again.'],
  enable: ['Enable', 'They go back into rotation.'],
  recheck: ['Recheck', 'Each is probed now and moved by what the probe shows.'],
  remove: ['Remove', 'They are deleted from the store. This cannot be undone.'],
};

function keyRow(k, selected, toggle) {
  const box = h('input', { type: 'checkbox', 'aria-label': `select ${k.masked}`, checked: selected.has(k.id) });
  box.addEventListener('change', () => toggle(k.id, box.checked));
  const c = k.counters || {};
  return h('tr', { 'data-id': k.id, 'data-state': k.state },
    h('td', { class: 'sel' }, box),
    h('td', { 'data-label': 'key', class: 'keycol' }, h('a', { href: `#/keys/${encodeURIComponent(k.id)}`, class: 'mono' }, k.masked),
      k.label ? h('span', { class: 'muted small label' }, k.label) : null),
    h('td', { 'data-label': 'id', class: 'mono small' }, k.id),
    h('td', { 'data-label': 'pool' }, k.pool),
    h('td', { 'data-label': 'state', class: 'statecol' }, stateCell(k)),
    h('td', { 'data-label': 'balance', class: 'num' }, k.balance === null || k.balance === undefined ? '—' : k.balance.toFixed(2)),
    h('td', { 'data-label': 'requests', class: 'num' }, num(c.requests)),
    h('td', { 'data-label': 'failures', class: 'num' }, num(c.failures)),
    h('td', { 'data-label': 'tokens', class: 'num' }, num((c.prompt_tokens || 0) + (c.completion_tokens || 0))),
    h('td', { 'data-label': 'since', class: 'small' }, ago(k.since)));
}

export async function renderKeys(main, { api, query }) {
  const f = {
    pool: query.get('pool') || '', state: query.get('state') || '', reason: query.get('reason') || '',
    q: query.get('q') || '', sort: query.get('sort') || 'id', order: query.get('order') || 'asc',
    limit: Number(query.get('limit')) || 50,
  };
  const cursors = [null]; // cursors[i] fetches page i
  let page = 0;
  let rows = [];
  const selected = new Set();
  let closed = false;

  const pools = await api('GET', '/pools');
  const sel = (name, opts, value, all) => h('select', { name, 'aria-label': name },
    h('option', { value: '' }, all), opts.map((o) => h('option', { value: o, selected: o === value }, o)));
  const poolSel = sel('pool', pools.data.map((p) => p.name), f.pool, 'all pools');
  const stateSel = sel('state', STATES, f.state, 'all states');
  const reason = h('input', { type: 'search', name: 'reason', placeholder: 'reason', value: f.reason, 'aria-label': 'reason' });
  const search = h('input', { type: 'search', name: 'q', placeholder: 'search id or last 4', value: f.q, 'aria-label': 'search' });
  const sortSel = h('select', { name: 'sort', 'aria-label': 'sort' },
    SORTS.flatMap(([v, t]) => [h('option', { value: `${v}:asc`, selected: f.sort === v && f.order === 'asc' }, `${t} ↑`),
      h('option', { value: `${v}:desc`, selected: f.sort === v && f.order === 'desc' }, `${t} ↓`)]));
  for (const s of [poolSel, stateSel]) s.value = f[s.name];
  const summary = h('span', { class: 'muted', id: 'keys-summary' });
  const prev = h('button', { type: 'button', class: 'btn', id: 'prev' }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn', id: 'next' }, 'Next ›');
  const tbody = h('tbody');
  const allBox = h('input', { type: 'checkbox', 'aria-label': 'select all on this page' });
  const bulkCount = h('span', { class: 'muted', id: 'selected-count' });
  const bulkButtons = Object.entries(ACTIONS).map(([a, [t]]) => h('button', { type: 'button', class: a === 'remove' ? 'btn danger' : 'btn', 'data-bulk': a, disabled: true }, t));
  const headers = [['', null], ['key', null], ['id', 'id'], ['pool', null], ['state', 'state'], ['balance', null],
    ['requests', 'requests'], ['failures', 'failures'], ['tokens', null], ['since', 'since']];

  function setHash() {
    const p = params({ pool: f.pool, state: f.state, reason: f.reason, q: f.q, sort: f.sort === 'id' ? '' : f.sort,
      order: f.order === 'asc' ? '' : f.order });
    history.replaceState(null, '', `#/keys${p}`);
  }

  function toggle(id, on) {
    if (on) selected.add(id); else selected.delete(id);
    bulkCount.textContent = selected.size ? `${selected.size} selected` : '';
    for (const b of bulkButtons) b.disabled = selected.size === 0;
    allBox.checked = rows.length > 0 && rows.every((k) => selected.has(k.id));
  }

  let loads = 0; // a load answered after a newer one began (clicks faster than the server) is dropped
  async function load() {
    const at = page;
    const mine = ++loads;
    const q = params({ pool: f.pool, state: f.state, reason: f.reason, q: f.q, sort: f.sort, order: f.order, limit: f.limit, cursor: cursors[at] });
    tbody.setAttribute('aria-busy', 'true');
    let r;
    try {
      r = await api('GET', `/keys${q}`);
    } catch (e) {
      if (mine === loads) clear(tbody).append(h('tr', null, h('td', { colspan: 10, class: 'error' }, e.message)));
      return;
    } finally {
      if (mine === loads) tbody.removeAttribute('aria-busy');
    }
    if (closed || mine !== loads) return;
    rows = r.data;
    cursors[at + 1] = r.next_cursor;
    clear(tbody);
    if (!rows.length) tbody.append(h('tr', null, h('td', { colspan: 10, class: 'muted empty' }, 'No keys match.')));
    for (const k of rows) tbody.append(keyRow(k, selected, toggle));
    const first = at * f.limit + (rows.length ? 1 : 0);
    summary.textContent = `${num(first)}–${num(at * f.limit + rows.length)} of ${num(r.total)} keys · page ${at + 1} of ${num(Math.max(1, Math.ceil(r.total / f.limit)))}`;
    prev.disabled = at === 0;
    next.disabled = !r.next_cursor;
    toggle('', false);
  }

  function refilter() {
    f.pool = poolSel.value; f.state = stateSel.value; f.reason = reason.value.trim(); f.q = search.value.trim();
    [f.sort, f.order] = sortSel.value.split(':');
    cursors.length = 1; page = 0; selected.clear();
    renderHead();
    setHash();
    load();
  }
  for (const s of [poolSel, stateSel, sortSel]) s.addEventListener('change', refilter);
  const typed = debounce(refilter, 300);
  reason.addEventListener('input', typed);
  search.addEventListener('input', typed);
  prev.addEventListener('click', () => { if (page > 0) { page -= 1; load(); } });
  next.addEventListener('click', () => { if (cursors[page + 1]) { page += 1; load(); } });
  allBox.addEventListener('change', () => {
    const on = allBox.checked;
    for (const k of rows) toggle(k.id, on);
    for (const b of tbody.querySelectorAll('td.sel input')) b.checked = on;
  });
  for (const b of bulkButtons) {
    b.addEventListener('click', async () => {
      const action = b.dataset.bulk;
      const ids = [...selected];
      const [title, why] = ACTIONS[action];
      if (!await confirmDialog(`${title} ${ids.length} key${ids.length === 1 ? '' : 's'}?`, why, title, action === 'remove')) return;
      try {
        const r = await api('POST', '/keys/bulk', { action, ids });
        const bad = r.results.filter((x) => !x.ok);
        toast(`${title}: ${r.results.length - bad.length} done${bad.length ? `, ${bad.length} failed (${bad[0].error || 'error'})` : ''}`, bad.length ? 'error' : 'ok');
      } catch (e) {
        toast(e.message, 'error');
      }
      selected.clear();
      load();
    });
  }

  const thead = h('thead', null, h('tr', null, headers.map(([t, key]) => {
    if (!t) return h('th', { class: 'sel' }, allBox);
    if (!key) return h('th', { scope: 'col' }, t);
    const btn = h('button', { type: 'button', class: 'sort', 'data-sort': key }, t);
    btn.addEventListener('click', () => {
      sortSel.value = `${key}:${f.sort === key && f.order === 'asc' ? 'desc' : 'asc'}`;
      refilter();
    });
    return h('th', { scope: 'col' }, btn);
  })));
  const table = h('table', { class: 'keys' }, thead, tbody);
  function renderHead() {
    for (const b of thead.querySelectorAll('button.sort')) {
      const cur = b.dataset.sort === f.sort;
      b.textContent = b.dataset.sort + (cur ? (f.order === 'asc' ? ' ↑' : ' ↓') : '');
      if (cur) b.parentElement.setAttribute('aria-sort', f.order === 'asc' ? 'ascending' : 'descending');
      else b.parentElement.removeAttribute('aria-sort');
    }
  }
  renderHead();

  main.append(
    h('h1', null, 'Keys'),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); refilter(); } }, poolSel, stateSel, reason, search, sortSel),
    h('div', { class: 'bulk' }, bulkCount, bulkButtons),
    h('div', { class: 'tablewrap' }, table),
    h('div', { class: 'pager' }, prev, summary, next));
  await load();

  // live: a row whose key changed state is fetched again and redrawn in place
  async function redraw(id) {
    const i = rows.findIndex((k) => k.id === id);
    if (i < 0) return;
    let k;
    try { k = await api('GET', `/keys/${encodeURIComponent(id)}`); } catch { return; }
    const tr = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (!tr || closed) return;
    rows[i] = k;
    const fresh = keyRow(k, selected, toggle);
    fresh.classList.add('flash');
    tr.replaceWith(fresh);
  }
  const off = onTransition((ev) => {
    if (ev.to !== 'removed') { redraw(ev.key_id); return; }
    const tr = tbody.querySelector(`tr[data-id="${CSS.escape(ev.key_id)}"]`);
    if (tr) tr.remove();
    rows = rows.filter((k) => k.id !== ev.key_id);
    selected.delete(ev.key_id);
  });
  const rested = new Set();
  // a cooling key comes back by itself when its time is up (no event for that): redraw it then
  const tick = setInterval(() => {
    const now = Date.now() / 1000;
    for (const el of tbody.querySelectorAll('[data-until]')) {
      const until = Number(el.dataset.until);
      el.textContent = `${el.dataset.word} ${time(until)} (${ago(until, now)})`;
      const tr = el.closest('tr');
      if (until < now - 1 && tr.dataset.state === 'cooling' && !rested.has(tr.dataset.id)) {
        rested.add(tr.dataset.id);
        redraw(tr.dataset.id);
      }
    }
  }, 1000);
  return () => { closed = true; off(); clearInterval(tick); };
}
