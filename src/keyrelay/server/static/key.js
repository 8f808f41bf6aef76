// One key: its fields, actions, usage chart and events as a timeline.
import { onTransition } from './api.js';
import { barChart, grid } from './chart.js';
import { ago, append, badge, clear, confirmDialog, debounce, h, num, params, time, toast } from './dom.js';
import { eventItem } from './events.js';

export async function renderKey(main, { api, parts }) {
  const id = parts[1];
  const head = h('div', { class: 'keyhead' });
  const fields = h('dl', { class: 'fields' });
  const actions = h('div', { class: 'row actions' });
  const chartBox = h('div', { class: 'chartwrap' });
  const timeline = h('ol', { class: 'timeline', id: 'key-events' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Older events');
  let key = null;
  let cursor = null;
  let span = 'hour';

  function draw(k) {
    key = k;
    const c = k.counters || {};
    append(clear(head), [h('h1', { class: 'mono' }, k.masked), badge(k.state), k.reason ? h('span', { class: 'reason' }, k.reason) : null]);
    const f = [
      ['id', h('span', { class: 'mono' }, k.id)], ['pool', h('a', { href: `#/keys${params({ pool: k.pool })}` }, k.pool)],
      ['state', k.state], ['reason', k.reason || '—'], ['since', `${time(k.since)} (${ago(k.since)})`],
      [k.state === 'cooling' ? 'until' : 'recheck', k.until && k.state !== 'active' && k.state !== 'disabled' ? `${time(k.until)} (${ago(k.until)})` : '—'], ['label', k.label || '—'], ['weight', k.weight ?? '—'],
      ['balance', k.balance === null || k.balance === undefined ? '—' : k.balance.toFixed(2)], ['base URL', k.base_url || 'the pool\'s'],
      ['requests', num(c.requests)], ['failures', num(c.failures)], ['prompt tokens', num(c.prompt_tokens)],
      ['completion tokens', num(c.completion_tokens)],
    ];
    append(clear(fields), f.map(([t, v]) => h('div', null, h('dt', null, t), h('dd', { 'data-field': t }, v))));
    clear(actions).append(
      k.state === 'disabled'
        ? h('button', { type: 'button', class: 'btn primary', 'data-action': 'enable', onclick: () => act('enable') }, 'Enable')
        : h('button', { type: 'button', class: 'btn', 'data-action': 'disable', onclick: () => act('disable') }, 'Disable'),
      h('button', { type: 'button', class: 'btn', 'data-action': 'recheck', onclick: () => act('recheck') }, 'Recheck now'),
      h('button', { type: 'button', class: 'btn danger', 'data-action': 'remove', onclick: () => act('remove') }, 'Remove'));
  }

  async function act(what) {
    const ask = {
      disable: ['Disable this key?', 'It stops taking traffic until enabled again.'],
      enable: ['Enable this key?', 'It goes back into rotation.'],
      recheck: ['Recheck this key now?', 'It is probed once and moved by what the probe shows.'],
      remove: ['Remove this key?', 'It is deleted from the store. This cannot be undone.'],
    }[what];
    if (!await confirmDialog(ask[0], `${key.masked}: ${ask[1]}`, what[0].toUpperCase() + what.slice(1), what === 'remove')) return;
    try {
      if (what === 'remove') {
        await api('DELETE', `/keys/${encodeURIComponent(id)}`);
        toast(`${key.masked} removed`, 'ok');
        location.hash = `#/keys${params({ pool: key.pool })}`;
        return;
      }
      draw(await api('POST', `/keys/${encodeURIComponent(id)}/${what}`));
      toast(`${key.masked}: ${key.state}`, 'ok');
      again();
    } catch (e) {
      toast(e.message, 'error');
    }
  }

  async function events() {
    const r = await api('GET', `/keys/${encodeURIComponent(id)}/events${params({ limit: 50, cursor })}`);
    for (const ev of r.data) timeline.append(eventItem(ev, { withKey: false }));
    cursor = r.next_cursor;
    more.hidden = !cursor;
    if (!timeline.children.length) timeline.append(h('li', { class: 'muted empty' }, 'No events yet.'));
  }
  function reloadEvents() { clear(timeline); cursor = null; events(); }
  const again = debounce(reloadEvents, 200);
  more.addEventListener('click', events);

  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  async function usage() {
    const now = Date.now() / 1000;
    const [res, secs, step, n] = span === 'hour' ? ['minute', 3600, 60, 60] : ['hour', 86400, 3600, 24];
    try {
      const r = await api('GET', `/usage${params({ key: id, resolution: res, since: Math.floor(now - secs), until: Math.ceil(now) })}`);
      clear(chartBox).append(barChart(grid(r.buckets, step, now, n), step, `${key.masked}: requests by outcome, last ${span}`));
    } catch (e) {
      clear(chartBox).append(h('p', { class: 'error' }, `Usage unavailable: ${e.message}`));
    }
    for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.span === span));
  }
  tabs.append(
    h('button', { type: 'button', role: 'tab', class: 'tab', 'data-span': 'hour', onclick: () => { span = 'hour'; usage(); } }, 'Last hour'),
    h('button', { type: 'button', role: 'tab', class: 'tab', 'data-span': 'day', onclick: () => { span = 'day'; usage(); } }, 'Last day'));

  draw(await api('GET', `/keys/${encodeURIComponent(id)}`));
  main.append(
    h('p', null, h('a', { href: `#/keys${params({ pool: key.pool })}` }, '‹ Keys')),
    head, actions,
    h('section', { class: 'card' }, fields),
    h('section', { class: 'card' }, h('h2', null, 'Usage'), tabs, chartBox),
    h('section', { class: 'card' }, h('h2', null, 'Events'), timeline, more));
  usage();
  await events();
  const off = onTransition(async (ev) => {
    if (ev.key_id !== id) return;
    if (ev.to === 'removed') {
      append(clear(actions), [h('p', { class: 'error' }, `This key was removed${ev.actor ? ` by ${ev.actor}` : ''}.`)]);
      again();
      return;
    }
    try { draw(await api('GET', `/keys/${encodeURIComponent(id)}`)); } catch { return; }
    again();
  });
  return off;
}
