// The public API, as any client uses it. The access token lives in memory only; the refresh
// token is the HttpOnly cookie the API sets, exchanged for a new access token before the old
// one expires and whenever the page starts. WebSockets open with single-use tickets.

const BASE = '/api/v1';
const CART_KEY = 'hexmarket.cart';

/** A problem+json answer. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem ?? {};
    this.code = this.problem.code;
  }
}

const session = { token: null, user: null, expiresAt: 0, timer: null };
const listeners = new Set();

export function currentUser() {
  return session.user;
}

export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function changed() {
  for (const fn of listeners) fn(session.user);
}

export function cartToken() {
  return localStorage.getItem(CART_KEY);
}

export function setCartToken(token) {
  if (token) localStorage.setItem(CART_KEY, token);
  else localStorage.removeItem(CART_KEY);
}

/** Calls the API; `path` is below /api/v1. Throws ApiError on a problem. */
export async function api(method, path, { body, headers = {}, retry = true, signal } = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers }, credentials: 'same-origin', signal };
  if (session.token) init.headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(BASE + path, init);
  if (response.status === 401 && retry && session.token) {
    const problem = await response.clone().json().catch(() => ({}));
    if (problem.code === 'unauthenticated' && (await refresh())) {
      return api(method, path, { body, headers, retry: false, signal });
    }
  }
  return read(response);
}

async function read(response) {
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === 'object' ? data : { detail: data });
  return data;
}

/** Uses `tokens` (a login, refresh or step-up answer) from now on. */
export async function adopt(tokens) {
  session.token = tokens.access_token;
  session.expiresAt = Date.now() + tokens.expires_in * 1000;
  clearTimeout(session.timer);
  // Renew a minute before expiry (or at half-life for short tokens).
  const lead = Math.min(60, tokens.expires_in / 2);
  session.timer = setTimeout(() => refresh(), Math.max(5, tokens.expires_in - lead) * 1000);
  session.user = await api('GET', '/me', { retry: false });
  changed();
  return session.user;
}

let refreshing = null;

/** Exchanges the refresh cookie for new tokens; false when there is no session. */
export function refresh() {
  refreshing ??= (async () => {
    try {
      const run = async () => {
        const response = await fetch(`${BASE}/auth/refresh`, { method: 'POST', credentials: 'same-origin' });
        if (!response.ok) return null;
        return response.json();
      };
      // Tabs of one browser share the cookie: one refresh at a time, so none presents a
      // token another has just rotated (which would end the session everywhere).
      const tokens = navigator.locks ? await navigator.locks.request('hexmarket-refresh', run) : await run();
      if (!tokens) {
        forget();
        return false;
      }
      await adopt(tokens);
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function forget() {
  const had = session.user !== null;
  session.token = null;
  session.user = null;
  clearTimeout(session.timer);
  if (had) changed();
}

export async function login(email, password, secondFactor = {}) {
  const tokens = await api('POST', '/auth/login', { body: { email, password, ...secondFactor }, retry: false });
  const user = await adopt(tokens);
  await mergeGuestCart(user);
  return user;
}

/** A customer who filled a cart as a guest keeps it after signing in. */
export async function mergeGuestCart(user) {
  const token = cartToken();
  if (!token || user.role !== 'customer') return;
  try {
    await api('POST', '/cart/merge', { headers: { 'x-cart-token': token } });
  } catch {
    // The guest cart stays where it was; nothing is lost.
    return;
  }
  setCartToken(null);
}

export async function logout() {
  try {
    await fetch(`${BASE}/auth/logout`, { method: 'POST', credentials: 'same-origin' });
  } finally {
    forget();
  }
}

/** A step-up: a fresh access token that unlocks sensitive operations for 5 minutes. */
export async function stepUp(secondFactor) {
  const tokens = await api('POST', '/auth/step-up', { body: secondFactor });
  await adopt(tokens);
}

/** Headers that name the guest cart, when the caller is a guest. */
export function cartHeaders() {
  const token = cartToken();
  return !session.user && token ? { 'x-cart-token': token } : {};
}

/**
 * A WebSocket that reconnects: `path()` gives the stream's path (with `after_seq` for a
 * resume) each time it connects. Handlers: message(data), status('live'|'connecting'|'closed', info).
 */
export function stream(path, { message, status }) {
  let socket = null;
  let stopped = false;
  let attempt = 0;
  let timer = null;

  const connect = async () => {
    if (stopped) return;
    status?.('connecting');
    let ticket;
    try {
      ({ ticket } = await api('POST', '/ws/ticket', { body: {} }));
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        // The session ended (signed out, expired, revoked): nothing to reconnect for.
        stopped = true;
        status?.('closed', err);
        return undefined;
      }
      return retry(err);
    }
    if (stopped) return;
    const target = path();
    const url = new URL(target, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('ticket', ticket);
    socket = new WebSocket(url);
    socket.onopen = () => {
      attempt = 0;
      status?.('live');
    };
    socket.onmessage = (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      message(data);
    };
    socket.onclose = (event) => {
      socket = null;
      if (stopped) return;
      retry(event);
    };
  };

  const retry = (reason) => {
    if (stopped) return;
    attempt += 1;
    const delay = Math.min(10_000, 500 * 2 ** Math.min(attempt, 5)) * (0.75 + Math.random() / 2);
    status?.('connecting', reason);
    timer = setTimeout(connect, attempt === 1 ? 200 : delay);
  };

  const onOnline = () => {
    if (!socket && !stopped) {
      clearTimeout(timer);
      connect();
    }
  };
  window.addEventListener('online', onOnline);
  connect();

  return {
    send(data) {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(data));
        return true;
      }
      return false;
    },
    get buffered() {
      return socket ? socket.bufferedAmount : Infinity;
    },
    get open() {
      return !!socket && socket.readyState === WebSocket.OPEN;
    },
    /** Drops the connection (as a network would); it reconnects by itself. */
    drop() {
      socket?.close();
    },
    close() {
      stopped = true;
      clearTimeout(timer);
      window.removeEventListener('online', onOnline);
      socket?.close(1000);
      status?.('closed');
    },
  };
}
