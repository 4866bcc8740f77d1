// The vendor's screens: the live orders board, stock, and the store's settings.
import { api, stream } from '../api.js';
import { BERLIN, createMap, pin } from '../map.js';
import { chime, explain, field, h, label, money, mount, time, toast } from '../ui.js';

const COLUMNS = [
  ['new', 'New', ['paid']],
  ['accepted', 'Accepted', ['accepted']],
  ['preparing', 'Preparing', ['preparing']],
  ['ready', 'Ready for pickup', ['ready_for_pickup', 'courier_assigned']],
  ['out', 'With the courier', ['picked_up']],
];
const ACTIVE = COLUMNS.flatMap(([, , statuses]) => statuses);

async function myStore(main) {
  try {
    return await api('GET', '/vendors/mine');
  } catch (err) {
    if (err.status !== 404) throw err;
    openStoreForm(main);
    return null;
  }
}

function openStoreForm(main) {
  const name = h('input', { type: 'text', required: true, maxlength: 120 });
  const address = h('input', { type: 'text', required: true, maxlength: 300, autocomplete: 'street-address' });
  const radius = h('input', { type: 'number', min: 0.5, max: 50, step: 0.5, value: 5 });
  const mapEl = h('div', { class: 'map small' });
  const error = h('p', { class: 'error', role: 'alert' });
  let point = { ...BERLIN };
  mount(main, h('h1', {}, 'Open your store'), h('form', {
    class: 'card', onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api('POST', '/vendors', {
          body: { name: name.value.trim(), pickup_address: address.value.trim(), location: point, delivery_radius_km: Number(radius.value) },
        });
        toast('Your store is open');
        board(main);
      } catch (err) {
        error.textContent = explain(err);
      }
    },
  }, field('Store name', name), field('Pickup address', address), field('Delivers within (km)', radius),
  h('p', {}, 'Click the map where couriers pick orders up.'), mapEl, error,
  h('button', { type: 'submit', class: 'primary' }, 'Open the store')));
  const map = createMap(mapEl, point, 13, { label: 'Where the store is' });
  let marker = pin(map, point, 'store', 'Store');
  map.on('click', (e) => {
    point = { lat: e.latlng.lat, lng: e.latlng.lng };
    marker.remove();
    marker = pin(map, point, 'store', 'Store');
  });
}

/** The orders board: paid orders appear live with a sound and a badge. */
export async function board(main) {
  const vendor = await myStore(main);
  if (!vendor) return undefined;
  const orders = new Map();
  const lists = Object.fromEntries(COLUMNS.map(([key]) => [key, h('ul', { class: 'board-list' })]));
  const counts = Object.fromEntries(COLUMNS.map(([key]) => [key, h('span', { class: 'count' }, '0')]));
  const badge = h('span', { class: 'badge', hidden: true, 'aria-live': 'polite' });
  const connEl = h('span', { class: 'conn', role: 'status' });
  const baseTitle = document.title;
  let unseen = 0;

  const seenAll = () => {
    unseen = 0;
    badge.hidden = true;
    document.title = baseTitle;
  };
  const notify = () => {
    unseen += 1;
    badge.hidden = false;
    badge.textContent = `${unseen} new`;
    document.title = `(${unseen}) New orders — hexmarket`;
    chime();
  };

  const act = async (order, action, body) => {
    try {
      const updated = await api('POST', `/orders/${order.id}/${action}`, { body: body ?? {} });
      upsert(updated);
    } catch (err) {
      toast(explain(err), 'error');
    }
  };

  const card = (o) => {
    const buttons = [];
    const reason = h('input', { type: 'text', maxlength: 500, placeholder: 'e.g. out of stock', 'aria-label': 'Reason for rejecting' });
    if (o.status === 'paid') {
      buttons.push(h('button', { type: 'button', class: 'primary', onclick: () => act(o, 'accept') }, 'Accept'));
      const rejectForm = h('form', {
        class: 'reject', hidden: true, onsubmit: (event) => {
          event.preventDefault();
          act(o, 'reject', { reason: reason.value.trim() || 'The store cannot take this order' });
        },
      }, reason, h('button', { type: 'submit', class: 'danger' }, 'Reject'));
      buttons.push(h('button', {
        type: 'button', onclick: () => {
          rejectForm.hidden = false;
          reason.focus();
        },
      }, 'Reject…'), rejectForm);
    } else if (o.status === 'accepted') {
      buttons.push(h('button', { type: 'button', class: 'primary', onclick: () => act(o, 'preparing') }, 'Start preparing'));
    } else if (o.status === 'preparing') {
      buttons.push(h('button', { type: 'button', class: 'primary', onclick: () => act(o, 'ready') }, 'Ready for pickup'));
    }
    return h('li', { class: 'order-card', dataset: { order: o.id, status: o.status } },
      h('p', {}, h('a', { href: `/orders/${o.id}` }, `#${o.id.slice(-6)}`), ' ', h('span', { class: `status s-${o.status}` }, label(o.status)),
        ' ', h('time', { datetime: o.paid_at ?? o.created_at }, time(o.paid_at ?? o.created_at))),
      h('ul', { class: 'plain-list' }, o.lines.map((l) => h('li', {}, `${l.quantity} × ${l.title}`))),
      o.totals ? h('p', { class: 'meta' }, money(o.totals.subtotal)) : null,
      h('div', { class: 'row' }, buttons));
  };

  const draw = () => {
    for (const [key, , statuses] of COLUMNS) {
      const items = [...orders.values()].filter((o) => statuses.includes(o.status))
        .sort((a, b) => String(a.paid_at ?? a.created_at).localeCompare(String(b.paid_at ?? b.created_at)));
      mount(lists[key], items.length ? items.map(card) : h('li', { class: 'empty' }, 'None'));
      counts[key].textContent = String(items.length);
    }
  };

  function upsert(o) {
    const before = orders.get(o.id);
    if (ACTIVE.includes(o.status)) orders.set(o.id, o);
    else orders.delete(o.id);
    draw();
    return before;
  }

  const load = async () => {
    const fresh = new Map();
    for (const status of ACTIVE) {
      const page = await api('GET', `/vendor/orders?status=${status}&limit=100`);
      for (const o of page.items) fresh.set(o.id, o);
    }
    orders.clear();
    for (const [id, o] of fresh) orders.set(id, o);
    draw();
  };
  await load();

  const seqKey = `hexmarket.vendor-seq.${vendor.id}`;
  let lastSeq = Number(sessionStorage.getItem(seqKey) ?? 0);
  let greeted = false;
  const live = stream(() => (lastSeq ? `/ws/vendor?after_seq=${lastSeq}` : '/ws/vendor'), {
    async message(msg) {
      if (msg.type === 'hello') {
        if (!greeted) {
          // The board was just loaded: only what happens from now on is news.
          greeted = true;
          lastSeq = Math.max(lastSeq, msg.seq ?? 0);
        }
        return;
      }
      if (msg.type !== 'order_event') return;
      if (msg.seq <= lastSeq) return;
      lastSeq = msg.seq;
      sessionStorage.setItem(seqKey, String(lastSeq));
      try {
        const o = await api('GET', `/orders/${msg.order_id}`);
        const before = upsert(o);
        if (msg.status_after === 'paid' && !before) {
          notify();
          toast(`New order #${o.id.slice(-6)}`);
        }
      } catch (err) {
        toast(explain(err), 'error');
      }
    },
    status(state) {
      connEl.textContent = state === 'live' ? 'Live' : state === 'closed' ? '' : 'Reconnecting…';
      connEl.dataset.state = state;
      // Whatever was missed while away is on the board again.
      if (state === 'live' && greeted) load().catch(() => null);
    },
  });

  mount(main,
    h('div', { class: 'board-head' }, h('h1', {}, vendor.name, ': orders'), badge, connEl),
    h('div', { class: 'board', onclick: seenAll, onfocusin: seenAll },
      COLUMNS.map(([key, title]) => h('section', { class: 'column', 'aria-labelledby': `col-${key}` },
        h('h2', { id: `col-${key}` }, title, ' ', counts[key]), lists[key]))));
  return () => {
    live.close();
    document.title = baseTitle;
  };
}

export async function stock(main) {
  const vendor = await myStore(main);
  if (!vendor) return;
  const page = await api('GET', '/vendor/products?limit=100');
  const rows = await Promise.all(page.items.map(async (p) => {
    const inv = await api('GET', `/products/${p.id}/inventory`).catch(() => null);
    const input = h('input', { type: 'number', min: 0, max: 1_000_000, value: inv?.stock ?? 0, 'aria-label': `Stock of ${p.title}` });
    const note = h('span', { class: 'meta' }, inv ? `${inv.held ?? 0} held, ${inv.available ?? 0} available` : '');
    return h('tr', {},
      h('th', { scope: 'row' }, p.title, p.visibility !== 'published' ? h('span', { class: 'meta' }, ` (${p.visibility})`) : null),
      h('td', {}, money(p.price)),
      h('td', {}, input),
      h('td', {}, note),
      h('td', {}, h('button', {
        type: 'button', onclick: async () => {
          try {
            const answer = await api('PUT', `/products/${p.id}/inventory`, { body: { stock: Number(input.value), reason: 'counted in the store' } });
            const now = answer.inventory ?? answer;
            note.textContent = `${now.held ?? 0} held, ${now.available ?? 0} available`;
            toast(`Stock of ${p.title} saved`);
          } catch (err) {
            toast(explain(err), 'error');
          }
        },
      }, 'Save')));
  }));
  mount(main, h('h1', {}, 'Stock'),
    h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, ['Product', 'Price', 'Stock', 'Now', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5 }, 'No products yet.')))));
}

export async function settings(main) {
  const vendor = await myStore(main);
  if (!vendor) return;
  const name = h('input', { type: 'text', value: vendor.name, required: true, maxlength: 120 });
  const description = h('textarea', { maxlength: 5000, rows: 3 }, vendor.description);
  const address = h('input', { type: 'text', value: vendor.pickup_address, required: true, maxlength: 300 });
  const radius = h('input', { type: 'number', min: 0.5, max: 50, step: 0.5, value: vendor.delivery_radius_km });
  const status = h('select', { disabled: vendor.status === 'suspended' }, ['active', 'paused', 'closed'].map((s) => h('option', { value: s, selected: vendor.status === s }, label(s))));
  const error = h('p', { class: 'error', role: 'alert' });
  mount(main, h('h1', {}, 'Store settings'), h('form', {
    class: 'card', onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        await api('PATCH', `/vendors/${vendor.id}`, {
          body: { name: name.value.trim(), description: description.value, pickup_address: address.value.trim(), delivery_radius_km: Number(radius.value), status: vendor.status === 'suspended' ? undefined : status.value },
        });
        toast('Store settings saved');
      } catch (err) {
        error.textContent = explain(err);
      }
    },
  }, field('Name', name), field('Description', description), field('Pickup address', address),
  field('Delivers within (km)', radius), field('Taking orders', status), error,
  h('button', { type: 'submit', class: 'primary' }, 'Save')));
}
