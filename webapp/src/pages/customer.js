// The customer's screens: stores near an address, a store, a product, the cart (a guest's
// too), checkout, order history and the live order page.
import { api, cartHeaders, cartToken, currentUser, setCartToken, stream } from '../api.js';
import { BERLIN, MovingMarker, createMap, fit, pin, dispose } from '../map.js';
import { navigate } from '../nav.js';
import { dateTime, distance, duration, explain, field, h, label, money, mount, time, toast, uuid } from '../ui.js';

const WHERE_KEY = 'hexmarket.where';

/** Where the customer wants things delivered: `{text, lat, lng}`. */
function where() {
  try {
    const saved = JSON.parse(localStorage.getItem(WHERE_KEY));
    if (saved && Number.isFinite(saved.lat) && Number.isFinite(saved.lng)) return saved;
  } catch {
    // A damaged entry is replaced below.
  }
  return { text: 'Alexanderplatz 1, Berlin', ...BERLIN };
}

function setWhere(value) {
  localStorage.setItem(WHERE_KEY, JSON.stringify(value));
}

/** An address line with a point picked on a map or from the browser's location. */
function addressPicker(initial, onChange) {
  let current = { ...initial };
  const text = h('input', { type: 'text', autocomplete: 'street-address', value: current.text, required: true, maxlength: 300 });
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const mapEl = h('div', { class: 'map small' });
  let map;
  let marker;
  const show = () => {
    status.textContent = `Delivery point: ${current.lat.toFixed(5)}, ${current.lng.toFixed(5)}`;
    if (map) {
      marker?.remove();
      marker = pin(map, current, 'dropoff', 'Delivery point');
      map.panTo([current.lat, current.lng]);
    }
  };
  const changed = () => {
    show();
    onChange?.(current);
  };
  text.addEventListener('change', () => {
    current = { ...current, text: text.value.trim() };
    onChange?.(current);
  });
  const locate = h('button', {
    type: 'button', onclick: () => {
      if (!navigator.geolocation) {
        toast('This browser cannot tell its location', 'error');
        return;
      }
      status.textContent = 'Finding your location…';
      navigator.geolocation.getCurrentPosition((pos) => {
        current = { ...current, lat: pos.coords.latitude, lng: pos.coords.longitude };
        changed();
      }, (err) => {
        status.textContent = `Location not available (${err.message}); pick the point on the map.`;
      }, { enableHighAccuracy: true, timeout: 10_000 });
    },
  }, 'Use my location');
  const el = h('div', { class: 'address-picker' },
    field('Delivery address', text, 'Click the map to set the exact point.'),
    h('div', { class: 'row' }, locate), mapEl, status);
  requestAnimationFrame(() => {
    map = createMap(mapEl, current, 14, { label: 'Pick the delivery point' });
    map.on('click', (e) => {
      current = { ...current, lat: e.latlng.lat, lng: e.latlng.lng };
      changed();
    });
    show();
  });
  return { el, value: () => ({ ...current, text: text.value.trim() }) };
}

function productCard(p, onAdd) {
  const price = p.price ? money(p.price) : '';
  return h('li', { class: 'product' },
    h('a', { href: `/products/${p.id}`, class: 'title' }, p.title),
    h('span', { class: 'meta' }, p.vendor_name ?? p.vendor?.name ?? ''),
    h('span', { class: 'price' }, price),
    h('span', { class: p.available > 0 ? 'meta' : 'meta warn' }, p.available > 0 ? `${p.available} in stock` : 'Out of stock'),
    h('button', { type: 'button', disabled: p.available <= 0, onclick: () => onAdd(p), 'aria-label': `Add ${p.title} to the cart` }, 'Add'));
}

async function addToCart(product, quantity = 1) {
  try {
    const cart = await api('POST', '/cart/items', { body: { product_id: product.id, quantity }, headers: cartHeaders() });
    if (!currentUser() && cart?.cart_token) setCartToken(cart.cart_token);
    toast(`${product.title} added to the cart`);
  } catch (err) {
    if (err.code === 'invalid_cart_token') setCartToken(null);
    toast(explain(err), 'error');
  }
}

export async function home(main) {
  let here = where();
  const stores = h('ul', { class: 'cards stores', 'aria-label': 'Stores near you' });
  const results = h('ul', { class: 'cards products', 'aria-label': 'Search results' });
  const q = h('input', { type: 'search', name: 'q', placeholder: 'pizza, sushi, flowers…', maxlength: 200 });
  const picker = addressPicker(here, (value) => {
    here = value;
    setWhere(value);
    loadStores();
  });

  const loadStores = async () => {
    const page = await api('GET', `/vendors?near=${here.lat.toFixed(5)},${here.lng.toFixed(5)}&radius_km=10&limit=30`).catch((err) => {
      toast(explain(err), 'error');
      return { items: [] };
    });
    mount(stores, page.items.length ? page.items.map((v) => h('li', { class: 'store' },
      h('a', { href: `/stores/${v.id}`, class: 'title' }, v.name),
      h('span', { class: 'meta' }, v.description || v.pickup_address),
      h('span', { class: 'meta' }, `${distance((v.distance_km ?? 0) * 1000)} away · `, v.open_now ? 'open now' : 'closed',
        v.rating?.count ? ` · ★ ${v.rating.average?.toFixed?.(1) ?? v.rating.average}` : ''))) : h('li', {}, 'No stores deliver here yet.'));
  };

  const search = async (event) => {
    event?.preventDefault();
    const text = q.value.trim();
    if (!text) {
      mount(results);
      return;
    }
    const params = new URLSearchParams({ q: text, near: `${here.lat.toFixed(5)},${here.lng.toFixed(5)}`, radius_km: '10', limit: '24' });
    try {
      const found = await api('GET', `/products?${params}`);
      mount(results, found.items.length ? found.items.map((p) => productCard(p, addToCart)) : h('li', {}, 'Nothing found.'));
    } catch (err) {
      toast(explain(err), 'error');
    }
  };

  mount(main,
    h('h1', {}, 'Order from stores near you'),
    h('section', { class: 'card' }, picker.el),
    h('form', { class: 'search', role: 'search', onsubmit: search },
      field('Search products', q), h('button', { type: 'submit', class: 'primary' }, 'Search')),
    results,
    h('h2', {}, 'Stores'), stores);
  await loadStores();
}

export async function store(main, id) {
  const vendor = await api('GET', `/vendors/${encodeURIComponent(id)}`);
  const products = await api('GET', `/products?vendor=${encodeURIComponent(id)}&limit=60&sort=popular`);
  const mapEl = h('div', { class: 'map small' });
  mount(main,
    h('h1', {}, vendor.name),
    h('p', {}, vendor.description),
    h('p', { class: 'meta' }, vendor.pickup_address, ' · ', vendor.open_now ? 'open now' : 'closed now',
      ` · delivers within ${vendor.delivery_radius_km} km`),
    mapEl,
    h('h2', {}, 'Products'),
    h('ul', { class: 'cards products' }, products.items.map((p) => productCard({ ...p, vendor_name: vendor.name }, addToCart))));
  const map = createMap(mapEl, vendor.location, 14, { label: `Where ${vendor.name} is` });
  pin(map, vendor.location, 'store', vendor.name);
}

export async function product(main, id) {
  const p = await api('GET', `/products/${encodeURIComponent(id)}`);
  const quantity = h('input', { type: 'number', min: 1, max: 99, value: 1, inputmode: 'numeric' });
  const image = p.images?.[0];
  mount(main,
    h('article', { class: 'card product-page' },
      image ? h('img', { src: `/media/${image.thumbnail_key}`, alt: p.title, width: 320, height: Math.round(320 * (image.height / image.width || 1)) }) : null,
      h('h1', {}, p.title),
      h('p', { class: 'price' }, money(p.price)),
      h('p', {}, p.description),
      h('p', { class: 'meta' }, 'Sold by ', h('a', { href: `/stores/${p.vendor.id}` }, p.vendor.name),
        ` · ${p.available} available`, p.rating?.count ? ` · ★ ${p.rating.average}` : ''),
      h('div', { class: 'row' }, field('Quantity', quantity),
        h('button', {
          type: 'button', class: 'primary', disabled: p.available <= 0,
          onclick: () => addToCart(p, Math.max(1, Math.min(99, Number(quantity.value) || 1))),
        }, 'Add to cart'))));
}

export async function cart(main) {
  const view = await api('GET', '/cart', { headers: cartHeaders() }).catch((err) => {
    if (err.code === 'invalid_cart_token') setCartToken(null);
    throw err;
  });
  const redraw = () => cart(main);
  const setQuantity = async (line, quantity) => {
    try {
      if (quantity <= 0) await api('DELETE', `/cart/items/${line.product_id}`, { headers: cartHeaders() });
      else await api('PATCH', `/cart/items/${line.product_id}`, { body: { quantity }, headers: cartHeaders() });
      await redraw();
    } catch (err) {
      toast(explain(err), 'error');
    }
  };
  if (!view.lines.length) {
    mount(main, h('h1', {}, 'Your cart'), h('p', {}, 'The cart is empty. ', h('a', { href: '/' }, 'Find a store')));
    return;
  }
  const rows = view.lines.map((line) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: `/products/${line.product_id}` }, line.title ?? 'Product no longer listed'),
      line.purchasable ? null : h('span', { class: 'warn' }, ' (not available)')),
    h('td', {}, line.unit_price ? money(line.unit_price) : '–'),
    h('td', {}, h('div', { class: 'stepper' },
      h('button', { type: 'button', 'aria-label': `One less ${line.title ?? ''}`, onclick: () => setQuantity(line, line.quantity - 1) }, '−'),
      h('span', { 'aria-label': 'Quantity' }, line.quantity),
      h('button', { type: 'button', 'aria-label': `One more ${line.title ?? ''}`, onclick: () => setQuantity(line, line.quantity + 1) }, '+'))),
    h('td', {}, line.line_total ? money(line.line_total) : '–'),
    h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => setQuantity(line, 0) }, 'Remove'))));
  const user = currentUser();
  mount(main,
    h('h1', {}, 'Your cart'),
    h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, ['Product', 'Price', 'Quantity', 'Total', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)),
    h('ul', { class: 'plain-list' }, view.vendors.map((v) => h('li', {}, `${v.vendor_name}: ${money(v.subtotal)} (${v.item_count} items)`))),
    h('p', { class: 'total' }, 'Total: ', view.totals.map(money).join(' + ')),
    user && user.role === 'customer'
      ? h('a', { href: '/checkout', class: 'button primary' }, 'Check out')
      : h('p', {}, h('a', { href: '/signin?next=/checkout', class: 'button primary' }, 'Sign in to check out'),
        ' Your cart is kept and joins your account when you sign in.'));
  if (!user && !cartToken()) setCartToken(view.cart_token);
}

export async function checkout(main) {
  const view = await api('GET', '/cart');
  if (!view.lines.length) {
    mount(main, h('h1', {}, 'Checkout'), h('p', {}, 'Your cart is empty. ', h('a', { href: '/' }, 'Find a store')));
    return;
  }
  const config = window.hexmarketConfig?.payments ?? { method: 'simulated' };
  const picker = addressPicker(where(), setWhere);
  const coupon = h('input', { type: 'text', maxlength: 64, autocomplete: 'off' });
  const error = h('p', { class: 'error', role: 'alert' });
  const pay = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'pay-title' });
  const place = h('button', { type: 'submit', class: 'primary' }, 'Place order');
  // One key per attempt: a retry after a network failure replays the same checkout.
  let key = sessionStorage.getItem('hexmarket.checkout-key') ?? uuid();
  sessionStorage.setItem('hexmarket.checkout-key', key);

  const form = h('form', {
    class: 'card', onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      place.disabled = true;
      const address = picker.value();
      const body = {
        delivery_address: { text: address.text, lat: address.lat, lng: address.lng },
        payment_method: config.method,
      };
      if (coupon.value.trim()) body.coupon_code = coupon.value.trim();
      try {
        const result = await api('POST', '/checkout', { body, headers: { 'idempotency-key': key } });
        sessionStorage.removeItem('hexmarket.checkout-key');
        form.hidden = true;
        await payFor(result, pay, config);
      } catch (err) {
        // A refusal is final for its key (a retry would replay it): the next attempt, after
        // the cart or the address changed, gets a key of its own. A lost answer or a request
        // still running keeps the key, so retrying cannot check out twice.
        const settled = err.status >= 400 && err.status < 500 && err.code !== 'request_in_progress';
        if (settled) {
          key = uuid();
          sessionStorage.setItem('hexmarket.checkout-key', key);
        }
        error.textContent = explain(err);
        place.disabled = false;
      }
    },
  },
  h('h2', {}, 'Delivery'), picker.el,
  field('Coupon code (optional)', coupon),
  h('p', { class: 'total' }, 'Goods: ', view.totals.map(money).join(' + '), ' (the delivery fee is added per store by distance)'),
  error, place);
  mount(main, h('h1', {}, 'Checkout'), form, pay);
}

async function payFor(result, box, config) {
  const orders = result.orders;
  const first = orders[0];
  box.hidden = false;
  const total = money(result.payment.amount);
  const done = () => {
    toast('Payment received: your order is on its way to the store');
    navigate(orders.length === 1 ? `/orders/${first.id}` : '/orders');
  };
  if (config.method === 'stripe' && config.stripe_publishable_key && result.payment.client_secret) {
    const { payWithStripe } = await import('../stripe.js');
    await payWithStripe(box, config.stripe_publishable_key, result.payment.client_secret, total, done);
    return;
  }
  const error = h('p', { class: 'error', role: 'alert' });
  const send = async (outcome) => {
    try {
      await api('POST', `/payments/${result.payment.id}/simulate`, { body: { outcome } });
      if (outcome === 'succeed') done();
      else {
        error.textContent = 'The payment was declined; the stock is released.';
        navigate(`/orders/${first.id}`);
      }
    } catch (err) {
      error.textContent = explain(err);
    }
  };
  mount(box,
    h('h2', { id: 'pay-title' }, `Pay ${total}`),
    h('p', {}, `${orders.length} order${orders.length > 1 ? 's' : ''} placed; the stock is held until you pay. `,
      'This node simulates card payments: no card is charged.'),
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'primary', onclick: () => send('succeed') }, `Pay ${total}`),
      h('button', { type: 'button', onclick: () => send('fail') }, 'Decline the payment')),
    error);
  box.querySelector('button.primary').focus();
}

export async function orders(main) {
  const user = currentUser();
  const page = await api('GET', user.role === 'vendor' ? '/vendor/orders' : '/orders');
  mount(main,
    h('h1', {}, 'Your orders'),
    page.items.length
      ? h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, ['Order', 'Placed', 'Status', 'Total'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, page.items.map((o) => h('tr', {},
          h('th', { scope: 'row' }, h('a', { href: `/orders/${o.id}` }, `#${o.id.slice(-6)}`)),
          h('td', {}, dateTime(o.created_at)),
          h('td', {}, h('span', { class: `status s-${o.status}` }, label(o.status))),
          h('td', {}, o.totals ? money(o.totals.total) : '–')))))
      : h('p', {}, 'No orders yet. ', h('a', { href: '/' }, 'Find a store')));
}

const EVENT_TEXT = {
  created: 'Order placed',
  paid: 'Payment received',
  payment_failed: 'Payment failed',
  payment_returned: 'Payment returned',
  accepted: 'The store accepted the order',
  rejected: 'The store rejected the order',
  preparing: 'The store is preparing it',
  ready: 'Ready for pickup',
  courier_assigned: 'A courier is on the way to the store',
  arrived_at_pickup: 'The courier is at the store',
  picked_up: 'Picked up: on its way to you',
  arriving: 'The courier is nearly there',
  delivered: 'Delivered',
  cancelled: 'Cancelled',
  refunded: 'Refunded',
  expired: 'Expired before payment',
};

const STEPS = ['paid', 'accepted', 'preparing', 'ready_for_pickup', 'picked_up', 'delivered'];
const STEP_OF = { courier_assigned: 'ready_for_pickup' };

/** The live order page: status timeline, the courier on the map, ETA, the handoff code. */
export async function order(main, id) {
  const record = await api('GET', `/orders/${encodeURIComponent(id)}`);
  const events = await api('GET', `/orders/${encodeURIComponent(id)}/events`).catch(() => ({ events: [] }));
  const vendor = await api('GET', `/vendors/${record.vendor_id}`).catch(() => null);
  const dropoff = record.delivery_address?.location;
  let status = record.status;
  let lastSeq = 0;
  const seen = new Set();

  const statusEl = h('span', { class: `status s-${status}` });
  const etaEl = h('p', { class: 'eta', 'aria-live': 'polite' });
  const connEl = h('span', { class: 'conn', role: 'status' }, 'Connecting…');
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'What happened' });
  const progress = h('ol', { class: 'progress', 'aria-label': 'Progress' },
    STEPS.map((s) => h('li', { dataset: { step: s } }, label(s))));
  const mapEl = h('div', { class: 'map' });

  const showStatus = () => {
    statusEl.className = `status s-${status}`;
    statusEl.textContent = label(status);
    const reached = STEPS.indexOf(STEP_OF[status] ?? status);
    for (const li of progress.children) {
      const index = STEPS.indexOf(li.dataset.step);
      li.classList.toggle('done', reached >= 0 && index <= reached);
      li.toggleAttribute('aria-current', index === reached);
    }
    if (['delivered', 'cancelled', 'rejected', 'expired', 'payment_failed', 'refunded'].includes(status)) etaEl.textContent = '';
  };
  const addEvent = (e) => {
    if (seen.has(e.seq)) return;
    seen.add(e.seq);
    lastSeq = Math.max(lastSeq, e.seq);
    const kind = e.kind?.type ?? e.kind;
    const detail = kind === 'rejected' && e.kind.reason ? `: ${e.kind.reason}` : '';
    const item = h('li', { dataset: { seq: e.seq, kind } }, h('time', { datetime: e.at }, time(e.at)), ' ', EVENT_TEXT[kind] ?? label(kind), detail);
    // Kept in sequence order whatever order they arrive in.
    const after = [...timeline.children].find((li) => Number(li.dataset.seq) > e.seq);
    timeline.insertBefore(item, after ?? null);
  };
  for (const e of events.events ?? []) addEvent(e);
  showStatus();

  const totals = record.totals;
  mount(main,
    h('h1', {}, `Order #${record.id.slice(-6)} `, statusEl),
    h('div', { class: 'order-grid' },
      h('div', {},
        mapEl,
        h('p', { class: 'meta' }, connEl)),
      h('div', {},
        record.handoff_code ? h('section', { class: 'card handoff' },
          h('h2', {}, 'Handoff code'),
          h('p', { class: 'code', 'aria-label': `Handoff code ${record.handoff_code.split('').join(' ')}` }, record.handoff_code),
          h('p', { class: 'meta' }, 'Tell it to your courier at the door: the delivery completes only with it.')) : null,
        etaEl,
        progress,
        h('section', { class: 'card' },
          h('h2', {}, vendor?.name ?? 'Store'),
          vendor ? h('p', { class: 'meta' }, vendor.pickup_address) : null,
          h('ul', { class: 'plain-list' }, record.lines.map((l) => h('li', {}, `${l.quantity} × ${l.title} — ${money(l.unit_price)}`))),
          totals ? h('p', {}, `Delivery ${money(totals.delivery_fee)} · Total ${money(totals.total)}`) : null,
          record.delivery_address ? h('p', { class: 'meta' }, 'To: ', record.delivery_address.address) : null,
          status === 'paid' && currentUser()?.id === record.customer_id ? h('button', {
            type: 'button', onclick: async () => {
              try {
                await api('POST', `/orders/${record.id}/cancel`);
              } catch (err) {
                toast(explain(err), 'error');
              }
            },
          }, 'Cancel the order') : null),
        h('section', { class: 'card' }, h('h2', {}, 'Timeline'), timeline))));

  const map = createMap(mapEl, dropoff ?? vendor?.location ?? BERLIN, 14, { label: 'Where your order is' });
  if (vendor) pin(map, vendor.location, 'store', `Store: ${vendor.name}`);
  if (dropoff) pin(map, dropoff, 'dropoff', 'Delivery point');
  fit(map, [vendor?.location, dropoff]);
  const courier = new MovingMarker(map, 'Your courier');
  let fitted = false;

  if (['delivered', 'cancelled', 'rejected', 'expired', 'payment_failed', 'refunded'].includes(status)) {
    connEl.textContent = 'This order has ended.';
    return () => dispose(map);
  }
  const live = stream(() => `/ws/orders/${record.id}?after_seq=${lastSeq}`, {
    message(msg) {
      if (msg.type === 'snapshot') {
        status = msg.status;
        showStatus();
        if (msg.eta_s != null) etaEl.textContent = `Arrives in about ${duration(msg.eta_s)}`;
        if (msg.courier) courier.moveTo(msg.courier, msg.courier.heading_deg);
      } else if (msg.type === 'event') {
        addEvent(msg);
        status = msg.status_after;
        showStatus();
      } else if (msg.type === 'location') {
        courier.moveTo(msg, msg.heading_deg);
        if (!fitted) {
          fitted = true;
          fit(map, [vendor?.location, dropoff, msg]);
        }
        if (msg.eta_s != null) etaEl.textContent = `Arrives in about ${duration(msg.eta_s)}`;
      }
    },
    status(state) {
      connEl.textContent = state === 'live' ? 'Live' : state === 'closed' ? '' : 'Reconnecting…';
      connEl.dataset.state = state;
    },
  });
  window.hexmarketOrderStream = live;
  return () => {
    live.close();
    courier.remove();
    dispose(map);
  };
}
