// Tokens: list, create (the token is shown once), revoke.
import { session } from './api.js';
import { clear, confirmDialog, h, time, toast } from './dom.js';

export async function renderTokens(main, { api }) {
  const tbody = h('tbody');
  const shown = h('div', { id: 'new-token' });
  const pools = (await api('GET', '/pools')).data.map((p) => p.name);

  async function load() {
    const r = await api('GET', '/tokens');
    clear(tbody);
    if (!r.data.length) tbody.append(h('tr', null, h('td', { colspan: 6, class: 'muted empty' }, 'No tokens.')));
    for (const t of r.data) {
      const mine = t.admin && t.name === session.name && !t.revoked_at; // signing out is how you drop your own
      const revoke = t.revoked_at ? h('span', { class: 'muted' }, `revoked ${time(t.revoked_at)}`)
        : mine ? h('span', { class: 'muted small' }, 'your session')
          : h('button', { type: 'button', class: 'btn danger small', 'data-revoke': t.id }, 'Revoke');
      if (!t.revoked_at && !mine) {
        revoke.addEventListener('click', async () => {
          if (!await confirmDialog(`Revoke ${t.name}?`, 'Clients using it are refused from now on.', 'Revoke', true)) return;
          try { await api('DELETE', `/tokens/${encodeURIComponent(t.id)}`); toast(`${t.name} revoked`, 'ok'); } catch (e) { toast(e.message, 'error'); }
          load();
        });
      }
      tbody.append(h('tr', { 'data-id': t.id, class: t.revoked_at ? 'revoked' : null },
        h('td', { 'data-label': 'name' }, t.name),
        h('td', { 'data-label': 'kind' }, t.admin ? 'admin' : 'client'),
        h('td', { 'data-label': 'pools' }, t.admin ? '—' : (t.pools || []).map((p) => (p === '*' ? 'every pool' : p)).join(', ')),
        h('td', { 'data-label': 'id', class: 'mono small' }, t.id),
        h('td', { 'data-label': 'created', class: 'small' }, time(t.created_at)),
        h('td', { 'data-label': '' }, revoke)));
    }
  }

  const name = h('input', { name: 'name', required: true, placeholder: 'my-app', 'aria-label': 'token name', autocomplete: 'off' });
  const boxes = [...pools, '*'].map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'pools', value: p }),
    p === '*' ? 'every pool, now and later' : p));
  const admin = h('input', { type: 'checkbox', name: 'admin' });
  const note = h('p', { class: 'error small', role: 'alert' });
  // an admin token uses no pool: it manages them
  admin.addEventListener('change', () => {
    for (const b of boxes) { b.firstChild.disabled = admin.checked; if (admin.checked) b.firstChild.checked = false; }
  });
  const form = h('form', { class: 'card create' },
    h('h2', null, 'New token'),
    h('label', null, 'Name', name),
    h('fieldset', null, h('legend', null, 'Pools it may use'), boxes),
    h('label', { class: 'check' }, admin, 'Admin token (this dashboard and the admin API; not for client traffic)'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Create'), note);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), pools: boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value) };
    if (admin.checked) body.admin = true;
    note.textContent = '';
    if (!body.admin && !body.pools.length) { note.textContent = 'Tick the pools this token may use (or make it an admin token).'; return; }
    try {
      const r = await api('POST', '/tokens', body);
      form.reset();
      for (const b of boxes) b.firstChild.disabled = false;
      showOnce(r);
      load();
    } catch (ex) {
      note.textContent = ex.message;
    }
  });

  // The new token: shown here once, never stored by the page, gone when dismissed or left.
  function showOnce(r) {
    const code = h('code', { class: 'secret', id: 'created-token' }, r.token);
    const copy = h('button', { type: 'button', class: 'btn' }, 'Copy');
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(code.textContent); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy it'; }
    });
    const done = h('button', { type: 'button', class: 'btn primary', id: 'dismiss-token' }, 'I have saved it');
    done.addEventListener('click', () => clear(shown));
    clear(shown).append(h('div', { class: 'card once', role: 'alert' },
      h('h2', null, `Token “${r.name}” created`),
      h('p', null, 'Copy it now: it is shown once and cannot be shown again.'),
      h('div', { class: 'row' }, code, copy), done));
  }

  main.append(h('h1', null, 'Tokens'), shown,
    h('div', { class: 'tablewrap' }, h('table', { class: 'tokens' },
      h('thead', null, h('tr', null, ['name', 'kind', 'pools', 'id', 'created', ''].map((t) => h('th', { scope: 'col' }, t)))), tbody)),
    form);
  await load();
  return () => clear(shown);
}
