// The administrator's screens: the operations map (H3 cells coloured by available couriers
// against open orders, unassigned orders), users and orders.
import { api, stepUp, stream } from '../api.js';
import { BERLIN, createMap, fit, polygon, dispose } from '../map.js';
import { count, dateTime, explain, field, h, label, money, mount, time, toast, uuid } from '../ui.js';

/* global H3_MODULE */

/** Runs `action`; when it needs a step-up, asks for an authenticator code and runs it again. */
async function withStepUp(action) {
  try {
    return await action();
  } catch (err) {
    if (err.code !== 'step_up_required') throw err;
  }
  const code = await askCode();
  if (!code) return null;
  await stepUp(/^\d{6}$/.test(code) ? { otp: code } : { recovery_code: code });
  return action();
}

function askCode() {
  return new Promise((resolve) => {
    const input = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: 11 });
    const dialog = h('dialog', { class: 'card', 'aria-labelledby': 'stepup-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'stepup-title' }, 'Confirm it is you'),
        h('p', {}, 'This change needs a fresh authenticator code (or a recovery code).'),
        field('Code', input),
        h('div', { class: 'row' },
          h('button', { type: 'submit', class: 'primary', value: 'ok' }, 'Confirm'),
          h('button', { type: 'submit', value: 'cancel', formnovalidate: true }, 'Cancel'))));
    dialog.addEventListener('close', () => {
      const value = dialog.returnValue === 'ok' ? input.value.trim() : null;
      dialog.remove();
      resolve(value);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Colour of a cell: green when couriers outnumber open orders, red when orders wait. */
function cellClass(cell) {
  const supply = cell.available_couriers;
  const demand = cell.open_orders;
  if (demand === 0 && supply === 0) return 'cell cell-busy';
  if (demand === 0) return 'cell cell-supply';
  if (supply >= demand) return 'cell cell-balanced';
  return 'cell cell-short';
}

export async function ops(main) {
  const mapEl = h('div', { class: 'map ops-map' });
  const totals = h('p', { class: 'ops-totals', 'aria-live': 'polite' });
  const connEl = h('span', { class: 'conn', role: 'status' });
  const unassigned = h('tbody');
  const legend = h('ul', { class: 'legend', 'aria-label': 'Legend' },
    h('li', {}, h('span', { class: 'swatch cell-supply' }), 'couriers free, no orders'),
    h('li', {}, h('span', { class: 'swatch cell-balanced' }), 'enough couriers for the orders'),
    h('li', {}, h('span', { class: 'swatch cell-short' }), 'orders waiting for couriers'),
    h('li', {}, h('span', { class: 'swatch cell-busy' }), 'couriers all busy'));
  mount(main,
    h('div', { class: 'board-head' }, h('h1', {}, 'Operations'), connEl),
    totals,
    h('div', { class: 'ops' }, mapEl,
      h('div', {}, legend,
        h('h2', {}, 'Unassigned orders'),
        h('table', { class: 'table' },
          h('thead', {}, h('tr', {}, ['Order', 'Waiting since', 'Offers made'].map((t) => h('th', { scope: 'col' }, t)))),
          unassigned))));
  const map = createMap(mapEl, BERLIN, 12, { label: 'Couriers and orders by H3 cell' });
  const h3 = await import(/* webpackIgnore: true */ H3_MODULE);
  let shapes = [];
  let fitted = false;

  const live = stream(() => '/ws/admin/ops', {
    message(msg) {
      if (msg.type !== 'ops') return;
      for (const s of shapes) s.remove();
      shapes = [];
      let free = 0;
      let busy = 0;
      let open = 0;
      const corners = [];
      for (const cell of msg.cells) {
        free += cell.available_couriers;
        busy += cell.busy_couriers;
        open += cell.open_orders;
        let ring;
        try {
          ring = h3.cellToBoundary(cell.cell);
        } catch {
          continue;
        }
        corners.push(...ring.map(([lat, lng]) => ({ lat, lng })));
        shapes.push(polygon(map, ring, cellClass(cell),
          `${count(cell.available_couriers, 'free courier')}, ${cell.busy_couriers} busy, ${count(cell.open_orders, 'open order')}`));
      }
      if (!fitted && corners.length) {
        fitted = true;
        fit(map, corners, 14);
      }
      totals.textContent = `${count(free, 'courier')} free · ${busy} busy · ${count(open, 'open order')} · ${msg.unassigned.length} unassigned · updated ${time(msg.at)}`;
      mount(unassigned, msg.unassigned.length
        ? msg.unassigned.map((u) => h('tr', {},
          h('th', { scope: 'row' }, h('a', { href: `/orders/${u.order_id}` }, `#${u.order_id.slice(-6)}`)),
          h('td', {}, time(u.since)), h('td', {}, String(u.attempts))))
        : h('tr', {}, h('td', { colspan: 3 }, 'Every accepted order has a courier.')));
    },
    status(state) {
      connEl.textContent = state === 'live' ? 'Live' : state === 'closed' ? '' : 'Reconnecting…';
      connEl.dataset.state = state;
    },
  });
  return () => {
    live.close();
    dispose(map);
  };
}

export async function users(main) {
  const email = h('input', { type: 'search', maxlength: 254 });
  const role = h('select', {}, h('option', { value: '' }, 'Any role'), ['customer', 'vendor', 'courier', 'admin'].map((r) => h('option', { value: r }, label(r))));
  const body = h('tbody');
  const load = async (event) => {
    event?.preventDefault();
    const params = new URLSearchParams({ limit: '50' });
    if (email.value.trim()) params.set('email', email.value.trim());
    if (role.value) params.set('role', role.value);
    const page = await api('GET', `/admin/users?${params}`);
    mount(body, page.users.map(row));
  };
  const patch = async (user, change) => {
    try {
      await withStepUp(() => api('PATCH', `/admin/users/${user.id}`, { body: change }));
      toast(`${user.email} updated`);
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  };
  const row = (u) => {
    const roleSelect = h('select', { 'aria-label': `Role of ${u.email}` }, ['customer', 'vendor', 'courier', 'admin'].map((r) => h('option', { value: r, selected: u.role === r }, label(r))));
    return h('tr', {},
      h('th', { scope: 'row' }, u.name, h('br'), h('span', { class: 'meta' }, u.email)),
      h('td', {}, roleSelect, ' ', h('button', { type: 'button', onclick: () => patch(u, { role: roleSelect.value }) }, 'Set role')),
      h('td', {}, u.banned ? h('span', { class: 'warn' }, 'banned') : 'active'),
      h('td', {}, dateTime(u.created_at)),
      h('td', {}, h('button', { type: 'button', class: u.banned ? '' : 'danger', onclick: () => patch(u, { banned: !u.banned }) }, u.banned ? 'Lift ban' : 'Ban')));
  };
  mount(main, h('h1', {}, 'Users'),
    h('form', { class: 'search', role: 'search', onsubmit: load }, field('Email', email), field('Role', role), h('button', { type: 'submit', class: 'primary' }, 'Find')),
    h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, ['User', 'Role', 'Status', 'Since', ''].map((t) => h('th', { scope: 'col' }, t)))), body));
  await load();
}

export async function orders(main) {
  const status = h('select', {}, h('option', { value: '' }, 'Any status'),
    ['pending_payment', 'paid', 'accepted', 'preparing', 'ready_for_pickup', 'picked_up', 'delivered', 'cancelled', 'rejected', 'refunded', 'expired', 'payment_failed']
      .map((s) => h('option', { value: s }, label(s))));
  const body = h('tbody');
  const load = async (event) => {
    event?.preventDefault();
    const params = new URLSearchParams({ limit: '50' });
    if (status.value) params.set('status', status.value);
    const page = await api('GET', `/admin/orders?${params}`);
    mount(body, page.items.length ? page.items.map(row) : h('tr', {}, h('td', { colspan: 5 }, 'No orders.')));
  };
  const act = async (o, what) => {
    try {
      if (what === 'cancel') {
        await api('POST', `/admin/orders/${o.id}/cancel`, { body: {} });
      } else {
        const key = uuid();
        await withStepUp(() => api('POST', `/admin/orders/${o.id}/refund`, { body: {}, headers: { 'idempotency-key': key } }));
      }
      toast(`Order #${o.id.slice(-6)}: ${what === 'cancel' ? 'cancelled' : 'refunded'}`);
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  };
  const row = (o) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: `/orders/${o.id}` }, `#${o.id.slice(-6)}`)),
    h('td', {}, dateTime(o.created_at)),
    h('td', {}, h('span', { class: `status s-${o.status}` }, label(o.status))),
    h('td', {}, o.totals ? money(o.totals.total) : '–', o.refunded ? ` (${money(o.refunded)} refunded)` : ''),
    h('td', {},
      ['delivered', 'cancelled', 'rejected', 'refunded', 'expired', 'payment_failed'].includes(o.status) ? null
        : h('button', { type: 'button', onclick: () => act(o, 'cancel') }, 'Cancel'),
      ' ',
      o.paid_at && o.status !== 'refunded' ? h('button', { type: 'button', class: 'danger', onclick: () => act(o, 'refund') }, 'Refund') : null));
  mount(main, h('h1', {}, 'Orders'),
    h('form', { class: 'search', onsubmit: load }, field('Status', status), h('button', { type: 'submit', class: 'primary' }, 'Show')),
    h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, ['Order', 'Placed', 'Status', 'Total', ''].map((t) => h('th', { scope: 'col' }, t)))), body));
  await load();
}
