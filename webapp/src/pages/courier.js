// The courier's app, sized for a phone: go online, stream the browser's location (batched
// while the connection is slow), take offers, navigate to the pickup and the drop-off, hand
// over with the customer's code. "Simulate route" moves a courier without moving the phone.
import { api, stream } from '../api.js';
import { BERLIN, MovingMarker, createMap, fit, line, pin, dispose } from '../map.js';
import { count, distance, explain, field, h, money, mount, toast } from '../ui.js';

const ONLINE_KEY = 'hexmarket.courier-online';
const SPEED_MPS = 8;
const MAX_BATCH = 50;

/** Metres between two points (equirectangular: exact enough over a city). */
function metres(a, b) {
  const k = Math.PI / 180;
  const x = (b.lng - a.lng) * k * Math.cos(((a.lat + b.lat) / 2) * k);
  const y = (b.lat - a.lat) * k;
  return Math.sqrt(x * x + y * y) * 6_371_000;
}

function bearing(a, b) {
  const k = Math.PI / 180;
  const y = Math.sin((b.lng - a.lng) * k) * Math.cos(b.lat * k);
  const x = Math.cos(a.lat * k) * Math.sin(b.lat * k) - Math.sin(a.lat * k) * Math.cos(b.lat * k) * Math.cos((b.lng - a.lng) * k);
  return ((Math.atan2(y, x) / k) + 360) % 360;
}

export async function app(main) {
  const me = await api('GET', '/couriers/me');
  let online = false;
  let wantOnline = sessionStorage.getItem(ONLINE_KEY) === '1';
  let position = me.position ? { lat: me.position.lat, lng: me.position.lng } : null;
  const jobs = new Map();
  const offers = new Map();
  let buffer = [];
  let inflight = 0;
  let watchId = null;
  let simTimer = null;
  let flushTimer = null;

  const onlineBtn = h('button', { type: 'button', class: 'primary big', 'aria-pressed': 'false' }, 'Go online');
  const stateEl = h('p', { class: 'courier-state', role: 'status' }, 'Offline');
  const connEl = h('span', { class: 'conn' });
  const simulate = h('input', { type: 'checkbox' });
  const offersEl = h('ul', { class: 'offers', 'aria-label': 'Offers', 'aria-live': 'assertive' });
  const jobsEl = h('ul', { class: 'jobs', 'aria-label': 'Your deliveries' });
  const gpsEl = h('p', { class: 'meta', 'aria-live': 'off' });
  const mapEl = h('div', { class: 'map courier-map' });

  mount(main, h('div', { class: 'courier' },
    h('h1', { class: 'visually-hidden' }, 'Deliveries'),
    h('div', { class: 'row' }, onlineBtn, stateEl, connEl),
    h('label', { class: 'check' }, simulate, 'Simulate route (move without moving the phone)'),
    offersEl, jobsEl, mapEl, gpsEl));

  const map = createMap(mapEl, position ?? BERLIN, 14, { label: 'You and your stops' });
  const self = new MovingMarker(map, 'You');
  if (position) self.moveTo(position);
  let overlays = [];

  const drawStops = () => {
    for (const o of overlays) o.remove();
    overlays = [];
    const job = currentJob();
    if (!job) return;
    overlays.push(pin(map, job.pickup, 'store', `Pickup: ${job.pickup.address}`));
    overlays.push(pin(map, job.dropoff, 'dropoff', `Drop-off: ${job.dropoff.address}`));
    const target = job.stage === 'pickup' ? job.pickup : job.dropoff;
    if (position) overlays.push(line(map, [position, target]));
    fit(map, [position, job.pickup, job.dropoff]);
  };

  const currentJob = () => [...jobs.values()][0] ?? null;

  const socket = stream(() => '/ws/courier', {
    message(msg) {
      switch (msg.type) {
        case 'ack':
          if (msg.of === 'location') {
            inflight = 0;
            gpsEl.textContent = `Position sent (${msg.accepted} kept${msg.dropped ? `, ${msg.dropped} dropped as implausible` : ''})`;
          } else if (msg.of === 'go_online' || msg.of === 'go_offline') {
            online = !!msg.online;
            showOnline();
          } else if (msg.of === 'picked_up') {
            const job = jobs.get(msg.order_id);
            if (job) job.stage = 'dropoff';
            drawJobs();
            toast('Picked up: on to the customer');
          } else if (msg.of === 'delivered') {
            jobs.delete(msg.order_id);
            drawJobs();
            toast('Delivered. Thank you!', 'success');
          } else if (msg.of === 'offer_response') {
            offers.delete(msg.offer_id);
            drawOffers();
          }
          break;
        case 'offer':
          offers.set(msg.offer_id, msg);
          drawOffers();
          navigator.vibrate?.(200);
          break;
        case 'offer_withdrawn':
          offers.delete(msg.offer_id);
          drawOffers();
          break;
        case 'assignment':
          for (const [id, o] of offers) if (o.order_id === msg.order_id) offers.delete(id);
          drawOffers();
          jobs.set(msg.order_id, { order_id: msg.order_id, pickup: msg.pickup, dropoff: msg.dropoff, stage: 'pickup' });
          drawJobs();
          break;
        case 'order_cancelled':
          jobs.delete(msg.order_id);
          drawJobs();
          toast('An order was cancelled: it left your hands', 'error');
          break;
        case 'error':
          if (msg.code === 'not_online') inflight = 0;
          toast(`${msg.message || msg.code}`, 'error');
          break;
        default:
      }
    },
    status(state) {
      connEl.textContent = state === 'live' ? 'Connected' : state === 'closed' ? '' : 'Reconnecting…';
      connEl.dataset.state = state;
      if (state === 'live') {
        inflight = 0;
        if (wantOnline) socket.send({ type: 'go_online' });
      } else {
        online = false;
        showOnline();
      }
    },
  });

  function showOnline() {
    onlineBtn.textContent = online ? 'Go offline' : 'Go online';
    onlineBtn.setAttribute('aria-pressed', String(online));
    stateEl.textContent = online ? 'Online: offers come here' : 'Offline';
    stateEl.dataset.online = String(online);
    if (online) startLocation();
    else stopLocation();
  }

  onlineBtn.addEventListener('click', () => {
    wantOnline = !online;
    sessionStorage.setItem(ONLINE_KEY, wantOnline ? '1' : '0');
    if (!socket.send({ type: wantOnline ? 'go_online' : 'go_offline' })) toast('Not connected yet: trying again', 'error');
  });

  let centred = !!position;
  const record = (point) => {
    const previous = position;
    position = { lat: point.lat, lng: point.lng };
    self.moveTo(position, point.heading_deg ?? (previous ? bearing(previous, position) : undefined));
    if (!centred) {
      // The first fix: the map comes to where the courier is.
      centred = true;
      if (!currentJob()) map.setView([position.lat, position.lng], 15, { animate: false });
    }
    buffer.push(point);
    if (buffer.length > 500) buffer = buffer.slice(-500);
    drawDistances();
  };

  function startLocation() {
    if (flushTimer) return;
    flushTimer = setInterval(flush, 1000);
    if (simulate.checked) startSimulation();
    else startGeolocation();
  }

  function stopLocation() {
    clearInterval(flushTimer);
    flushTimer = null;
    if (watchId !== null) navigator.geolocation.clearWatch(watchId);
    watchId = null;
    clearInterval(simTimer);
    simTimer = null;
  }

  function startGeolocation() {
    if (!navigator.geolocation) {
      gpsEl.textContent = 'This browser cannot tell its location: use "Simulate route".';
      return;
    }
    watchId = navigator.geolocation.watchPosition((pos) => {
      const c = pos.coords;
      record({
        lat: c.latitude,
        lng: c.longitude,
        accuracy_m: Math.max(1, Math.min(10_000, c.accuracy || 10)),
        heading_deg: Number.isFinite(c.heading) ? c.heading : undefined,
        speed_mps: Number.isFinite(c.speed) ? c.speed : undefined,
        recorded_at: new Date(pos.timestamp).toISOString(),
      });
    }, (err) => {
      const why = err.code === err.PERMISSION_DENIED ? 'not allowed' : err.message || 'no fix yet';
      gpsEl.textContent = `Location unavailable (${why}). Allow location, or use "Simulate route".`;
    }, { enableHighAccuracy: true, maximumAge: 1000 });
  }

  /** A position every second along streets-like legs (north–south, then east–west). */
  function startSimulation() {
    let wander = 0;
    simTimer = setInterval(() => {
      const from = position ?? BERLIN;
      const job = currentJob();
      let target = job ? (job.stage === 'pickup' ? job.pickup : job.dropoff) : null;
      if (!target) {
        wander += 1;
        const angle = wander / 20;
        target = { lat: from.lat + Math.sin(angle) * 0.0008, lng: from.lng + Math.cos(angle) * 0.0012 };
      }
      const corner = { lat: target.lat, lng: from.lng };
      const leg = metres(from, corner) > 1 ? corner : target;
      const left = metres(from, leg);
      const step = Math.min(1, SPEED_MPS / Math.max(left, 0.001));
      const next = { lat: from.lat + (leg.lat - from.lat) * step, lng: from.lng + (leg.lng - from.lng) * step };
      if (metres(from, next) < 0.5) return;
      record({
        lat: next.lat,
        lng: next.lng,
        accuracy_m: 5,
        heading_deg: bearing(from, next),
        speed_mps: SPEED_MPS,
        recorded_at: new Date().toISOString(),
      });
    }, 1000);
  }

  simulate.addEventListener('change', () => {
    if (!flushTimer) return;
    stopLocation();
    startLocation();
  });

  /** Sends what was recorded: one point, or a batch when acknowledgements lag. */
  function flush() {
    if (!online || buffer.length === 0) return;
    if (inflight && Date.now() - inflight < 5000) return;
    const batch = buffer.splice(0, MAX_BATCH);
    const message = batch.length === 1 ? { type: 'location', point: batch[0] } : { type: 'location', points: batch };
    if (socket.send(message)) inflight = Date.now();
    else buffer.unshift(...batch);
  }

  function drawOffers() {
    mount(offersEl, [...offers.values()].map((o) => {
      const left = h('span', { class: 'countdown' });
      const tick = () => {
        const s = Math.max(0, Math.round((new Date(o.expires_at) - Date.now()) / 1000));
        left.textContent = `${s} s left`;
        if (s <= 0) {
          offers.delete(o.offer_id);
          drawOffers();
        }
      };
      tick();
      const timer = setInterval(() => (left.isConnected ? tick() : clearInterval(timer)), 1000);
      const answer = (accept) => socket.send({ type: 'offer_response', offer_id: o.offer_id, accept });
      return h('li', { class: 'card offer' },
        h('h2', {}, `Offer: ${o.summary?.vendor_name ?? 'a store'}`),
        h('p', {}, `${count(o.summary?.items ?? 0, 'item')}${o.summary?.total ? ` · ${money(o.summary.total)}` : ''} · ${distance(o.distance_m)} to the pickup`),
        h('p', { class: 'meta' }, `From ${o.pickup.address}`),
        h('p', { class: 'meta' }, `To ${o.dropoff.address}`),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'primary big', onclick: () => answer(true) }, 'Accept'),
          h('button', { type: 'button', class: 'big', onclick: () => answer(false) }, 'Decline'),
          left));
    }));
  }

  function drawDistances() {
    for (const li of jobsEl.querySelectorAll('[data-order]')) {
      const job = jobs.get(li.dataset.order);
      const target = job && (job.stage === 'pickup' ? job.pickup : job.dropoff);
      const el = li.querySelector('.to-go');
      if (el && target && position) el.textContent = `${distance(metres(position, target))} to go`;
    }
  }

  function drawJobs() {
    mount(jobsEl, [...jobs.values()].map((job) => {
      const code = h('input', { type: 'text', inputmode: 'numeric', maxlength: 4, pattern: '\\d{4}', autocomplete: 'off' });
      const stage = job.stage === 'pickup'
        ? [h('p', {}, h('strong', {}, 'Go to the store: '), job.pickup.address),
          h('button', { type: 'button', class: 'primary big', onclick: () => socket.send({ type: 'picked_up', order_id: job.order_id }) }, 'Picked up')]
        : [h('p', {}, h('strong', {}, 'Deliver to: '), job.dropoff.address),
          h('form', {
            class: 'row', onsubmit: (event) => {
              event.preventDefault();
              socket.send({ type: 'delivered', order_id: job.order_id, code: code.value.trim() });
            },
          }, field("Customer's handoff code", code), h('button', { type: 'submit', class: 'primary big' }, 'Delivered'))];
      return h('li', { class: 'card job', dataset: { order: job.order_id, stage: job.stage } },
        h('h2', {}, `Delivery #${job.order_id.slice(-6)}`), ...stage, h('p', { class: 'meta to-go' }));
    }));
    drawDistances();
    drawStops();
  }

  // Deliveries already in hand (after a reload).
  for (const id of me.active_orders ?? []) {
    try {
      const order = await api('GET', `/orders/${id}`);
      const vendor = await api('GET', `/vendors/${order.vendor_id}`).catch(() => null);
      jobs.set(id, {
        order_id: id,
        pickup: { ...(vendor?.location ?? BERLIN), address: vendor?.pickup_address ?? 'the store' },
        dropoff: { ...order.delivery_address.location, address: order.delivery_address.address },
        stage: order.status === 'picked_up' ? 'dropoff' : 'pickup',
      });
    } catch (err) {
      toast(explain(err), 'error');
    }
  }
  drawJobs();
  showOnline();

  return () => {
    stopLocation();
    socket.close();
    self.remove();
    dispose(map);
  };
}
