// webapp.mjs BIN WORK_DIR SHOTS_DIR: the web app served at `/`, in Debian's headless Chromium,
// as its users meet it. A node of its own on a demo city (seeded by the CLI, its admin created
// by the CLI), then three browser contexts at once:
//   - a customer (behind a TCP relay the probe can cut, as a network drop would) signs in,
//     finds the store, fills the cart, checks out and pays, and watches the order page;
//   - the vendor's board shows the paid order within 1 s; the vendor accepts, prepares, readies;
//   - the courier page (the browser's geolocation emulated along a route) goes online, gets the
//     offer, accepts, drives to the store, picks up, drives to the drop-off, and completes the
//     delivery with the code read off the customer's page;
// the customer's courier marker moves and the timeline follows; the customer's connection is
// cut while the order moves on and, once back, the page resumes with every event of the
// order's log and none twice. Then the other screens of every role (an admin signing in with
// the authenticator code, a step-up by recovery code for a ban), a screenshot of each page,
// axe-core on each page (no serious or critical violation), no Content-Security-Policy
// violation anywhere, and Lighthouse on a live tracking page (performance ≥ 90, accessibility
// ≥ 95).
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, connect } from 'node:net';
import lighthouse from 'lighthouse';
import { chromium } from 'playwright-core';
import { checklist, freePort, sleep, startNode } from './node-probe.mjs';

const [bin, work, shots] = process.argv.slice(2);
const { log, check, stopped, finish } = checklist('webapp');
const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');
const PASSWORD = 'hexmarket-demo-2026';
const CHROMIUM = {
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: 60_000,
};

mkdirSync(shots, { recursive: true });
const data = `${work}/data`;
mkdirSync(data, { recursive: true });
const env = { ...process.env, HEXMARKET_DATA_DIR: data, HEXMARKET_LOG: 'warn' };

// The city and the admin, from the CLI while no node runs (the embedded store is one process's).
const seeded = spawnSync(bin, ['seed-demo', '--vendors', '4', '--products', '40', '--couriers', '3', '--customers', '4'], { env, encoding: 'utf8', timeout: 60_000 });
check(seeded.status === 0, 'seed-demo built the city', seeded.stderr);
const adminPassword = `kestrel-${Date.now().toString(36)}-lantern`;
const created = spawnSync(bin, ['create-admin', '--email', 'ops@probe.example.com', '--name', 'Ops'], { env, input: `${adminPassword}\n`, encoding: 'utf8', timeout: 60_000 });
const secret = created.stdout.match(/secret=([A-Z2-7]+)/)?.[1];
const recovery = created.stdout.split('\n').map((l) => l.trim()).filter((l) => /^[a-z0-9]{5}-[a-z0-9]{5}$/.test(l));
check(created.status === 0 && secret && recovery.length === 10, 'create-admin printed the authenticator and recovery codes', created.stderr);

/** The authenticator's current code (RFC 6238, SHA-1, 30 s, 6 digits). */
function totp(base32, offset = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of base32) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30_000) + offset));
  const mac = createHmac('sha1', key).update(counter).digest();
  const at = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(at) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const node = await startNode(bin, port, { HEXMARKET_DATA_DIR: data, HEXMARKET_PUBLIC_URL: base, HEXMARKET_MAP_TILE_URL: 'none' });

/** A relay in front of the node whose connections the probe can cut, as a network drop. */
async function relay(target) {
  const sockets = new Set();
  let up = true;
  const server = createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = connect(target, '127.0.0.1');
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listenPort = await freePort();
  await new Promise((r) => server.listen(listenPort, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${listenPort}`,
    cut() {
      up = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      up = true;
    },
  };
}

async function apiLogin(email, password, extra = {}) {
  const r = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password, ...extra }) });
  return (await r.json()).access_token;
}
async function apiGet(path, token) {
  const r = await fetch(`${base}/api/v1${path}`, { headers: { authorization: `Bearer ${token}` } });
  return r.json();
}

/** Metres between two points. */
function metres(a, b) {
  const k = Math.PI / 180;
  const x = (b.lng - a.lng) * k * Math.cos(((a.lat + b.lat) / 2) * k);
  const y = (b.lat - a.lat) * k;
  return Math.sqrt(x * x + y * y) * 6_371_000;
}

const cspViolations = [];
const pageErrors = [];
function watch(page, who) {
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(`${who}: ${m.text()}`);
  });
  page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function signIn(page, origin, email, password, code) {
  await page.goto(`${origin}/signin`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  if (code) {
    await page.getByLabel(/Authenticator code/).waitFor({ timeout: 10_000 });
    await page.getByLabel(/Authenticator code/).fill(code);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  }
  await page.waitForURL((url) => !url.pathname.startsWith('/signin'), { timeout: 15_000 });
}

/** The courier marker's place on screen (Leaflet positions markers by transform). */
async function markerAt(page) {
  return page.evaluate(() => document.querySelector('.leaflet-marker-icon.pin-courier')?.style.transform ?? null);
}

const browser = await chromium.launch(CHROMIUM);
let lighthouseOrder = null;
try {
  const vendorToken = await apiLogin('vendor0@demo.hexmarket.dev', PASSWORD);
  const store = await apiGet('/vendors/mine', vendorToken);
  check(!!store.id, `vendor0 runs ${store.name}`);
  // The drop-off: about 1.2 km north-east of the store; the courier starts 600 m south of it.
  const dropoff = { lat: store.location.lat + 0.008, lng: store.location.lng + 0.009 };
  let courierAt = { lat: store.location.lat - 0.0055, lng: store.location.lng };

  const customerRelay = await relay(port);
  const customerCtx = await browser.newContext({ viewport: { width: 1280, height: 900 }, geolocation: { latitude: dropoff.lat, longitude: dropoff.lng, accuracy: 10 }, permissions: ['geolocation'] });
  const vendorCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const courierCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, geolocation: { latitude: courierAt.lat, longitude: courierAt.lng, accuracy: 8 }, permissions: ['geolocation'] });
  const customer = await customerCtx.newPage();
  const vendor = await vendorCtx.newPage();
  const courier = await courierCtx.newPage();
  watch(customer, 'customer');
  watch(vendor, 'vendor');
  watch(courier, 'courier');
  const shop = customerRelay.url;

  // The courier goes online first, so the dispatcher has someone near the store.
  await signIn(courier, base, 'courier0@demo.hexmarket.dev', PASSWORD);
  check(new URL(courier.url()).pathname === '/courier', 'a courier lands on the courier app');
  await courier.getByRole('button', { name: 'Go online' }).click();
  await courier.getByText('Online: offers come here').waitFor({ timeout: 10_000 });
  check(true, 'the courier is online');
  await shot(courier, 'courier-online');

  await signIn(vendor, base, 'vendor0@demo.hexmarket.dev', PASSWORD);
  await vendor.locator('.conn[data-state="live"]').waitFor({ timeout: 10_000 });
  check(new URL(vendor.url()).pathname === '/vendor', "a vendor lands on the store's live board");

  // The customer: a guest cart first, then sign-in (the cart comes along), checkout, payment.
  await customer.goto(`${shop}/`);
  await customer.getByRole('link', { name: store.name }).click();
  await customer.getByRole('heading', { name: store.name }).waitFor();
  await shot(customer, 'customer-store');
  const addButtons = customer.locator('ul.products button:not([disabled])');
  const title = (await customer.locator('ul.products li').filter({ has: customer.locator('button:not([disabled])') }).first().locator('.title').textContent()).trim();
  await addButtons.first().click();
  await customer.getByText(`${title} added to the cart`).waitFor();
  await customer.locator('ul.products li .title', { hasText: title }).first().click();
  await customer.getByRole('button', { name: 'Add to cart' }).waitFor();
  await shot(customer, 'customer-product');
  await customer.getByRole('link', { name: 'Cart' }).click();
  await customer.getByRole('heading', { name: 'Your cart' }).waitFor();
  check(await customer.getByRole('link', { name: title }).isVisible(), "a guest's cart holds the product");
  await shot(customer, 'customer-cart-guest');
  await customer.getByRole('link', { name: 'Sign in to check out' }).click();
  await customer.getByLabel('Email').fill('customer0@demo.hexmarket.dev');
  await customer.getByLabel('Password').fill(PASSWORD);
  await customer.getByRole('button', { name: 'Sign in', exact: true }).click();
  await customer.waitForURL(`${shop}/checkout`);
  await customer.getByRole('button', { name: 'Use my location' }).click();
  await customer.getByText(`Delivery point: ${dropoff.lat.toFixed(5)}`).waitFor({ timeout: 10_000 });
  await customer.getByLabel('Delivery address').fill('Probe Street 7, Berlin');
  await shot(customer, 'customer-checkout');
  await customer.getByRole('button', { name: 'Place order' }).click();
  const pay = customer.getByRole('button', { name: /^Pay / });
  await pay.waitFor({ timeout: 15_000 });
  await shot(customer, 'customer-pay');

  const [paid] = await Promise.all([
    customer.waitForResponse((r) => r.url().includes('/simulate') && r.request().method() === 'POST'),
    pay.click(),
  ]);
  const paidAt = Date.now();
  check(paid.status() === 200 || paid.status() === 202, `the simulated payment went through (${paid.status()})`);
  await customer.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 15_000 });
  const orderId = customer.url().split('/').pop();
  const card = vendor.locator(`.order-card[data-order="${orderId}"]`);
  await card.waitFor({ timeout: 5_000 });
  const shownAfter = Date.now() - paidAt;
  check(shownAfter <= 1000, `the vendor's board showed the paid order ${shownAfter} ms after the payment (≤ 1000)`);
  check(await vendor.locator('.badge').isVisible(), 'the board shows a new-order badge');
  await shot(vendor, 'vendor-board-new-order');

  const code = (await customer.locator('.handoff .code').textContent()).trim();
  check(/^\d{4}$/.test(code), 'the customer sees the four-digit handoff code');
  await customer.locator('.conn[data-state="live"]').waitFor({ timeout: 10_000 });

  await card.getByRole('button', { name: 'Accept' }).click();
  await vendor.locator(`.column:has(#col-accepted) .order-card[data-order="${orderId}"]`).waitFor();
  await customer.locator('.timeline li[data-kind="accepted"]').waitFor({ timeout: 5_000 });
  check(true, "the customer's timeline shows the acceptance live");

  // The offer reaches the courier (dispatch runs once the store accepts).
  const offer = courier.locator('.offer');
  await offer.waitFor({ timeout: 30_000 });
  check(/s left/.test(await offer.locator('.countdown').textContent()), 'the offer counts down');
  await shot(courier, 'courier-offer');
  await offer.getByRole('button', { name: 'Accept' }).click();
  await courier.locator(`.job[data-order="${orderId}"]`).waitFor({ timeout: 10_000 });
  check(true, 'the courier accepted and got the delivery');

  await vendor.locator(`.order-card[data-order="${orderId}"]`).getByRole('button', { name: 'Start preparing' }).click();
  await vendor.locator(`.column:has(#col-preparing) .order-card[data-order="${orderId}"]`).waitFor();
  await vendor.locator(`.order-card[data-order="${orderId}"]`).getByRole('button', { name: 'Ready for pickup' }).click();
  await vendor.locator(`.column:has(#col-ready) .order-card[data-order="${orderId}"]`).waitFor();
  await shot(vendor, 'vendor-board-ready');

  /** Walks the courier's emulated geolocation to `to`, 25 m every 0.4 s (like a fast bike). */
  const drive = async (to, onStep) => {
    for (;;) {
      const left = metres(courierAt, to);
      const step = Math.min(1, 25 / Math.max(left, 1));
      courierAt = { lat: courierAt.lat + (to.lat - courierAt.lat) * step, lng: courierAt.lng + (to.lng - courierAt.lng) * step };
      await courierCtx.setGeolocation({ latitude: courierAt.lat, longitude: courierAt.lng, accuracy: 8 });
      if (onStep) await onStep(left);
      await sleep(400);
      if (left <= 25) return;
    }
  };

  // To the store: the customer's map shows the courier, moving.
  let first = null;
  let moved = false;
  await drive(store.location, async () => {
    const at = await markerAt(customer);
    if (at && first === null) first = at;
    if (at && first !== null && at !== first) moved = true;
  });
  check(moved, "the courier's marker moves on the customer's map");
  await customer.locator('.eta').filter({ hasText: /Arrives in about/ }).waitFor({ timeout: 10_000 }).then(
    () => check(true, 'the customer sees an ETA'),
    () => check(false, 'the customer sees an ETA'));
  await shot(customer, 'customer-tracking');
  await courier.getByRole('button', { name: 'Picked up' }).click();
  await courier.locator(`.job[data-order="${orderId}"][data-stage="dropoff"]`).waitFor({ timeout: 10_000 });
  await shot(courier, 'courier-to-dropoff');

  // The customer's network drops while the courier drives on: the order moves without them.
  await customer.locator('.timeline li[data-kind="picked_up"]').waitFor({ timeout: 10_000 });
  customerRelay.cut();
  await customer.locator('.conn[data-state="connecting"]').waitFor({ timeout: 10_000 });
  check(true, "the customer's page notices the drop");
  await drive(dropoff);
  const customerToken = await apiLogin('customer0@demo.hexmarket.dev', PASSWORD);
  const during = await apiGet(`/orders/${orderId}/events?limit=100`, customerToken);
  check(during.events.some((e) => e.kind.type === 'arriving'), 'the order moved on (arriving) while the customer was away');
  customerRelay.restore();
  await customer.locator('.conn[data-state="live"]').waitFor({ timeout: 20_000 });
  await customer.locator('.timeline li[data-kind="arriving"]').waitFor({ timeout: 10_000 });
  const shown = await customer.locator('.timeline li').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
  const logged = during.events.map((e) => e.seq);
  check(JSON.stringify(shown) === JSON.stringify(logged), `after the drop the timeline resumed with every event once (${shown.join(',')} vs ${logged.join(',')})`);

  // The handoff: the code the customer reads out.
  await courier.getByLabel("Customer's handoff code").fill(code);
  await courier.getByRole('button', { name: 'Delivered' }).click();
  await courier.getByText('Delivered. Thank you!').waitFor({ timeout: 10_000 });
  await customer.locator('.status.s-delivered').first().waitFor({ timeout: 10_000 });
  check(true, 'the handoff code completed the delivery; the customer sees it delivered');
  await shot(customer, 'customer-delivered');
  await shot(courier, 'courier-delivered');

  // The customer's other screens.
  await customer.getByRole('link', { name: 'Orders' }).click();
  await customer.getByRole('heading', { name: 'Your orders' }).waitFor();
  await shot(customer, 'customer-orders');
  await customer.goto(`${shop}/account`);
  await customer.getByRole('heading', { name: 'Your account' }).waitFor();
  await shot(customer, 'customer-account');
  await customer.goto(`${shop}/`);
  await customer.getByRole('heading', { name: 'Stores', exact: true }).waitFor();
  await customer.getByLabel('Search products').fill(title.split(' ')[0]);
  await customer.getByRole('button', { name: 'Search' }).click();
  await customer.locator('ul.products li').first().waitFor();
  await shot(customer, 'customer-home-search');

  // The vendor's other screens: stock (saved) and the store's settings.
  await vendor.getByRole('link', { name: 'Stock' }).click();
  const stockInput = vendor.locator('tbody input[type="number"]').first();
  await stockInput.waitFor();
  await stockInput.fill('77');
  await vendor.locator('tbody tr').first().getByRole('button', { name: 'Save' }).click();
  await vendor.getByText(/Stock of .* saved/).waitFor({ timeout: 5_000 });
  check(true, 'the vendor sets a stock level');
  await shot(vendor, 'vendor-stock');
  await vendor.getByRole('link', { name: 'Store' }).click();
  await vendor.getByRole('heading', { name: 'Store settings' }).waitFor();
  await shot(vendor, 'vendor-settings');

  // The admin, from the CLI: signs in with the authenticator, watches the city, bans with a step-up.
  const adminCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const admin = await adminCtx.newPage();
  watch(admin, 'admin');
  await signIn(admin, base, 'ops@probe.example.com', adminPassword, totp(secret));
  check(new URL(admin.url()).pathname === '/admin', 'an admin lands on the operations map');
  await admin.locator('path.cell').first().waitFor({ timeout: 10_000 });
  check(await admin.locator('path.cell').count() > 0, 'the operations map draws H3 cells from the ops stream');
  await shot(admin, 'admin-ops');
  await admin.getByRole('link', { name: 'Users' }).click();
  await admin.getByRole('heading', { name: 'Users' }).waitFor();
  await admin.getByLabel('Email').fill('customer3@demo.hexmarket.dev');
  await admin.getByRole('button', { name: 'Find' }).click();
  const row = admin.locator('tbody tr', { hasText: 'customer3@demo.hexmarket.dev' });
  await row.waitFor();
  await row.getByRole('button', { name: 'Ban' }).click();
  const dialog = admin.getByRole('dialog');
  await dialog.waitFor({ timeout: 5_000 }).then(async () => {
    await dialog.getByLabel('Code').fill(recovery[0]);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
  }, () => null);
  await row.getByText('banned').waitFor({ timeout: 10_000 });
  check(true, 'the admin banned a customer after a step-up');
  await shot(admin, 'admin-users');
  await admin.getByRole('link', { name: 'Orders' }).click();
  await admin.locator('tbody tr').first().waitFor();
  check(await admin.locator(`a[href="/orders/${orderId}"]`).count() === 1, "the admin's orders list has the delivered order");
  await shot(admin, 'admin-orders');

  // Screens of a signed-out visitor.
  const guestCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const guest = await guestCtx.newPage();
  watch(guest, 'guest');
  await guest.goto(`${base}/signin`);
  await guest.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  await shot(guest, 'signin');
  await guest.goto(`${base}/signup`);
  await guest.getByRole('heading', { name: 'Create an account' }).waitFor();
  await shot(guest, 'signup');
  // Phone-sized storefront.
  await guest.setViewportSize({ width: 390, height: 844 });
  await guest.goto(`${base}/`);
  await guest.getByRole('heading', { name: 'Stores', exact: true }).waitFor();
  await shot(guest, 'phone-home');

  // A second order stays live for the measurements below.
  lighthouseOrder = await placeOrder(customerToken, store.id, dropoff);

  // Accessibility: axe-core on every page of every role (a context of its own, where the
  // probe may inject axe's script; the app's own pages run under the strict policy above).
  const axeFindings = [];
  const axePages = [
    ['guest', null, ['/', '/signin', '/signup', `/stores/${store.id}`, '/cart']],
    ['customer', ['customer0@demo.hexmarket.dev', PASSWORD], ['/', `/orders/${orderId}`, `/orders/${lighthouseOrder}`, '/orders', '/cart', '/checkout', '/account']],
    ['vendor', ['vendor0@demo.hexmarket.dev', PASSWORD], ['/vendor', '/vendor/stock', '/vendor/store']],
    ['courier', ['courier1@demo.hexmarket.dev', PASSWORD], ['/courier']],
    ['admin', ['ops@probe.example.com', adminPassword, 1], ['/admin', '/admin/users', '/admin/orders']],
  ];
  for (const [who, creds, paths] of axePages) {
    const ctx = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    if (creds) {
      if (creds[2]) await sleep(Math.max(0, 30_000 - (Date.now() % 30_000)) + 500);
      await signIn(page, base, creds[0], creds[1], creds[2] ? totp(secret) : undefined);
    }
    for (const path of paths) {
      await page.goto(`${base}${path}`);
      await page.waitForLoadState('networkidle').catch(() => null);
      await page.waitForFunction(() => !document.querySelector('main .loading'), null, { timeout: 10_000 }).catch(() => null);
      await page.addScriptTag({ path: AXE });
      const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`));
      for (const v of violations) axeFindings.push(`${who} ${path}: ${v}`);
    }
    await ctx.close();
  }
  check(axeFindings.length === 0, `axe-core: no serious or critical violation on ${axePages.reduce((n, [, , p]) => n + p.length, 0)} pages`, axeFindings.join('\n'));
  check(cspViolations.length === 0, 'no Content-Security-Policy violation on any page', cspViolations.join('\n'));
  check(pageErrors.length === 0, 'no uncaught script error on any page', pageErrors.join('\n'));
} catch (e) {
  stopped(e);
} finally {
  await browser.close().catch(() => null);
}

/** An order placed and paid through the API, left with its store (for the measurements). */
async function placeOrder(token, vendorId, at) {
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const products = await (await fetch(`${base}/api/v1/products?vendor=${vendorId}&in_stock=true&limit=1`, { headers })).json();
  await fetch(`${base}/api/v1/cart/items`, { method: 'POST', headers, body: JSON.stringify({ product_id: products.items[0].id, quantity: 1 }) });
  const checkout = await (await fetch(`${base}/api/v1/checkout`, {
    method: 'POST',
    headers: { ...headers, 'idempotency-key': `probe-${Date.now()}` },
    body: JSON.stringify({ delivery_address: { text: 'Probe Street 9', lat: at.lat, lng: at.lng }, payment_method: 'simulated' }),
  })).json();
  await fetch(`${base}/api/v1/payments/${checkout.payment.id}/simulate`, { method: 'POST', headers, body: JSON.stringify({ outcome: 'succeed' }) });
  return checkout.orders[0].id;
}

// Lighthouse on the live tracking page, in the same Chromium (a browser of its own whose
// default profile holds the customer's session cookie, which Lighthouse keeps).
if (lighthouseOrder) {
  try {
    const debugPort = await freePort();
    const profile = `${work}/lighthouse-profile`;
    const ctx = await chromium.launchPersistentContext(profile, { ...CHROMIUM, args: [...CHROMIUM.args, `--remote-debugging-port=${debugPort}`] });
    const page = ctx.pages()[0] ?? await ctx.newPage();
    await signIn(page, base, 'customer0@demo.hexmarket.dev', PASSWORD);
    const url = `${base}/orders/${lighthouseOrder}`;
    const result = await lighthouse(url, {
      port: debugPort,
      output: 'html',
      logLevel: 'error',
      onlyCategories: ['performance', 'accessibility'],
      disableStorageReset: true,
    });
    writeFileSync(`${shots}/lighthouse-tracking.html`, result.report);
    const perf = Math.round(result.lhr.categories.performance.score * 100);
    const a11y = Math.round(result.lhr.categories.accessibility.score * 100);
    const audits = result.lhr.audits;
    log(`Lighthouse on the tracking page: performance ${perf}, accessibility ${a11y}; FCP ${audits['first-contentful-paint'].displayValue}, LCP ${audits['largest-contentful-paint'].displayValue}, TBT ${audits['total-blocking-time'].displayValue}, CLS ${audits['cumulative-layout-shift'].displayValue}`);
    check(perf >= 90, `Lighthouse performance ${perf} ≥ 90 on the tracking page`);
    check(a11y >= 95, `Lighthouse accessibility ${a11y} ≥ 95 on the tracking page`);
    await ctx.close();
  } catch (e) {
    stopped(e);
  }
}

node.kill('SIGTERM');
log(`screenshots in ${shots}`);
finish();
