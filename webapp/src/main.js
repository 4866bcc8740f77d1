// The app's shell: the header for the signed-in role, and a router over the page's paths
// (the server answers the same page for each of them, so every screen can be reloaded).
import { api, currentUser, logout, onSession, refresh } from './api.js';
import { configureMaps } from './map.js';
import { homeOf, navigate } from './nav.js';
import { h, mount, toast } from './ui.js';
import * as account from './pages/account.js';
import * as admin from './pages/admin.js';
import * as courier from './pages/courier.js';
import * as customer from './pages/customer.js';
import * as vendor from './pages/vendor.js';

const routes = [
  [/^\/$/, customer.home],
  [/^\/stores\/([^/]+)$/, customer.store],
  [/^\/products\/([^/]+)$/, customer.product],
  [/^\/cart$/, customer.cart],
  [/^\/checkout$/, customer.checkout, 'customer'],
  [/^\/orders$/, customer.orders, 'any'],
  [/^\/orders\/([^/]+)$/, customer.order, 'any'],
  [/^\/signin$/, account.signIn],
  [/^\/signup$/, account.signUp],
  [/^\/account$/, account.account, 'any'],
  [/^\/vendor$/, vendor.board, 'vendor'],
  [/^\/vendor\/stock$/, vendor.stock, 'vendor'],
  [/^\/vendor\/store$/, vendor.settings, 'vendor'],
  [/^\/courier$/, courier.app, 'courier'],
  [/^\/admin$/, admin.ops, 'admin'],
  [/^\/admin\/users$/, admin.users, 'admin'],
  [/^\/admin\/orders$/, admin.orders, 'admin'],
];

let cleanup = null;
let renders = 0;
const main = document.getElementById('main');

async function render() {
  if (typeof cleanup === 'function') {
    try {
      cleanup();
    } catch {
      // A page that failed to tidy up must not stop the next one.
    }
  }
  cleanup = null;
  const path = location.pathname;
  const found = routes.find(([pattern]) => pattern.test(path));
  header();
  if (!found) {
    mount(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '/' }, 'Back to the stores')));
    return;
  }
  const [pattern, page, needs] = found;
  const user = currentUser();
  if (needs && !user) {
    navigate(`/signin?next=${encodeURIComponent(path + location.search)}`, { replace: true });
    return;
  }
  if (needs && needs !== 'any' && user.role !== needs) {
    mount(main, h('h1', {}, 'Not for this account'),
      h('p', {}, `This page is for ${needs}s. `, h('a', { href: homeOf(user) }, 'Go to your start page')));
    return;
  }
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  // Each screen draws into a view of its own: one the user already left (a slow answer after
  // another click) draws into a view no longer shown, and is tidied up as soon as it is done.
  const view = h('div', { class: 'view' }, h('p', { class: 'loading' }, 'Loading…'));
  const current = ++renders;
  mount(main, view);
  let done;
  try {
    done = await page(view, ...params);
  } catch (err) {
    mount(view, h('h1', {}, 'Something went wrong'), h('p', { class: 'error' }, err?.message ?? String(err)));
  }
  if (current !== renders) {
    if (typeof done === 'function') done();
    return;
  }
  cleanup = done;
  if (!document.activeElement || document.activeElement === document.body) {
    main.focus({ preventScroll: true });
  }
}

function header() {
  const user = currentUser();
  const links = [];
  const link = (href, text) => {
    const current = location.pathname === href ? 'page' : null;
    links.push(h('li', {}, h('a', { href, 'aria-current': current }, text)));
  };
  if (!user || user.role === 'customer') {
    link('/', 'Stores');
    link('/cart', 'Cart');
    if (user) link('/orders', 'Orders');
  } else if (user.role === 'vendor') {
    link('/vendor', 'Orders board');
    link('/vendor/stock', 'Stock');
    link('/vendor/store', 'Store');
  } else if (user.role === 'courier') {
    link('/courier', 'Deliveries');
  } else if (user.role === 'admin') {
    link('/admin', 'Operations');
    link('/admin/orders', 'Orders');
    link('/admin/users', 'Users');
  }
  const end = user
    ? [
        h('li', {}, h('a', { href: '/account' }, user.name || user.email)),
        h('li', {}, h('button', {
          type: 'button', class: 'link', onclick: async () => {
            await logout();
            toast('Signed out');
            navigate('/');
          },
        }, 'Sign out')),
      ]
    : [h('li', {}, h('a', { href: '/signin', class: 'button' }, 'Sign in'))];
  mount(document.getElementById('top'),
    h('a', { href: homeOf(user), class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'hexmarket'),
    h('nav', { 'aria-label': 'Main' }, h('ul', {}, links, end)));
}

// Same-page links go through the router.
document.addEventListener('click', (event) => {
  const a = event.target.closest?.('a[href]');
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/docs')) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', render);
window.addEventListener('hexmarket:navigate', render);

let lastRole;
onSession((user) => {
  // A session that ends elsewhere (expired, revoked) shows at once.
  const role = user?.role ?? null;
  if (role === lastRole || lastRole === undefined) return;
  lastRole = role;
  // A session that ended under a page that needs one (revoked, expired) leaves it at once;
  // a sign-in moves on by itself.
  if (user === null) render();
  else header();
});

async function start() {
  const config = await api('GET', '/app/config').catch(() => null);
  configureMaps(config?.map);
  window.hexmarketConfig = config;
  await refresh();
  lastRole = currentUser()?.role ?? null;
  await render();
}

start();
