// Events: the latest state changes, and new ones as they happen (EventSource).
import { onTransition } from './api.js';
import { badge, h, params, time } from './dom.js';

export function eventItem(ev, { withKey = true } = {}) {
  return h('li', { class: 'event', 'data-key': ev.key_id },
    h('time', { datetime: new Date(ev.at * 1000).toISOString() }, time(ev.at)),
    h('div', { class: 'what' },
      withKey ? h('a', { href: `#/keys/${encodeURIComponent(ev.key_id)}`, class: 'mono' }, ev.key_id) : null,
      withKey && ev.pool ? h('span', { class: 'muted' }, ev.pool) : null,
      h('span', { class: 'move' }, ev.from ? badge(ev.from) : null, ev.from ? ' → ' : null, badge(ev.to)),
      ev.reason ? h('span', { class: 'reason' }, ev.reason) : null),
    ev.detail || ev.actor ? h('div', { class: 'detail muted small' }, [ev.detail, ev.actor ? `by ${ev.actor}` : ''].filter(Boolean).join(' · ')) : null);
}

export async function renderEvents(main, { api, query }) {
  const pool = query.get('pool') || '';
  const list = h('ol', { class: 'timeline', id: 'feed' });
  const count = h('span', { class: 'muted', id: 'live-count' }, '');
  let live = 0;
  const pools = (await api('GET', '/pools')).data.map((p) => p.name);
  const poolSel = h('select', { name: 'pool', 'aria-label': 'pool' }, h('option', { value: '' }, 'all pools'),
    pools.map((n) => h('option', { value: n, selected: n === pool }, n)));
  poolSel.value = pool;
  poolSel.addEventListener('change', () => { location.hash = `#/events${params({ pool: poolSel.value })}`; });
  main.append(h('h1', null, 'Events'), h('div', { class: 'filters' }, poolSel),
    h('p', { class: 'muted' }, 'State changes of every key, newest first; new ones appear as they happen. ', count), list);
  const more = h('button', { type: 'button', class: 'btn' }, 'Older events');
  let cursor = null;
  async function page() {
    if (more.disabled) return; // a second click while a page is on its way would append it twice
    more.disabled = true;
    let r;
    try {
      r = await api('GET', `/events${params({ pool, limit: 100, cursor })}`);
    } finally {
      more.disabled = false;
    }
    for (const ev of r.data) list.append(eventItem(ev));
    cursor = r.next_cursor;
    more.hidden = !cursor;
    if (!list.children.length) list.append(h('li', { class: 'muted empty' }, 'No events yet.'));
  }
  more.addEventListener('click', page);
  main.append(more);
  await page();
  const off = onTransition((ev) => {
    if (pool && ev.pool !== pool) return;
    const empty = list.querySelector('.empty');
    if (empty) empty.remove();
    const li = eventItem(ev);
    li.classList.add('flash');
    list.prepend(li);
    live += 1;
    count.textContent = `${live} new since you opened this page.`;
  });
  return off;
}
