// passkeys.mjs BIN WORK_DIR: passkeys in a real browser. A node of its own whose public URL is
// http://localhost:PORT (so passkeys belong to `localhost`), and Debian's headless Chromium
// with a virtual platform authenticator (user verification, resident keys) added through
// Playwright's CDP session. A page of the node's origin does what a sign-in page does, with
// the browser's own WebAuthn JSON (`parse…OptionsFromJSON`, `toJSON()`): a customer signs up
// with a password, registers a passkey, signs in with it naming the account and without
// (discoverable), steps up with it; a copy of the authenticator whose counter starts over is
// refused as a clone; a phishing page on another origin relaying the node's challenge to an
// authenticator holding the passkey is refused.
import { mkdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { chromium } from 'playwright-core';
import { checklist, freePort, startNode } from './node-probe.mjs';

const [bin, work] = process.argv.slice(2);
const { check, stopped, finish } = checklist('passkeys');

const port = await freePort();
const data = `${work}/data`;
mkdirSync(data, { recursive: true });
const origin = `http://localhost:${port}`;
const node = await startNode(bin, port, { HEXMARKET_PUBLIC_URL: origin, HEXMARKET_DATA_DIR: data });

// What a sign-in page runs: the API through fetch, the authenticator through WebAuthn.
const PAGE_HELPERS = `
  window.api = async (path, body, token) => {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = 'Bearer ' + token;
    const r = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body ?? {}) });
    const text = await r.text();
    let json = null; try { json = JSON.parse(text); } catch {}
    return { status: r.status, json, text };
  };
  window.create = async (options) => {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
    return (await navigator.credentials.create({ publicKey })).toJSON();
  };
  window.get = async (options) => {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
    return (await navigator.credentials.get({ publicKey })).toJSON();
  };
`;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: 60_000,
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/health`);
  await page.evaluate(PAGE_HELPERS);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const authenticator = {
    protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
    isUserVerified: true, automaticPresenceSimulation: true,
  };
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: authenticator });

  const email = `browser-${Date.now()}@probe.example.com`;
  const password = 'correct horse battery staple';
  const flow = await page.evaluate(async ({ email, password }) => {
    const out = {};
    out.registered = await api('/api/v1/auth/register', { email, password, name: 'Browser User', role: 'customer' });
    const login = await api('/api/v1/auth/login', { email, password });
    const token = login.json.access_token;
    out.token = token;
    const options = await api('/api/v1/auth/passkeys/register/options', {}, token);
    out.options = options.status;
    try {
      const credential = await create(options.json.options);
      out.register = await api('/api/v1/auth/passkeys/register', { ceremony_id: options.json.ceremony_id, name: 'this browser', credential }, token);
    } catch (e) { out.createError = String(e); }
    // Naming the account.
    const named = await api('/api/v1/auth/passkeys/sign-in/options', { email });
    try {
      out.named = await api('/api/v1/auth/passkeys/sign-in', { ceremony_id: named.json.ceremony_id, credential: await get(named.json.options) });
    } catch (e) { out.namedError = String(e); }
    // Discoverable: the authenticator says whose it is.
    const open = await api('/api/v1/auth/passkeys/sign-in/options', {});
    try {
      out.discoverable = await api('/api/v1/auth/passkeys/sign-in', { ceremony_id: open.json.ceremony_id, credential: await get(open.json.options) });
    } catch (e) { out.discoverableError = String(e); }
    // Step-up.
    const stepOptions = await api('/api/v1/auth/step-up/passkey/options', {}, token);
    try {
      out.stepUp = await api('/api/v1/auth/step-up/passkey', { ceremony_id: stepOptions.json.ceremony_id, credential: await get(stepOptions.json.options) }, token);
    } catch (e) { out.stepUpError = String(e); }
    return out;
  }, { email, password });
  check(flow.registered.status === 201, 'a customer signs up with a password', flow.registered.text);
  check(flow.register?.status === 201 && flow.register.json.name === 'this browser',
    'the browser registers a passkey', flow.createError ?? flow.register?.text);
  check(flow.named?.status === 200 && flow.named.json.access_token, 'it signs in naming the account', flow.namedError ?? flow.named?.text);
  check(flow.discoverable?.status === 200 && flow.discoverable.json.access_token,
    'it signs in without naming the account', flow.discoverableError ?? flow.discoverable?.text);
  check(flow.stepUp?.status === 200 && flow.stepUp.json.access_token, 'it steps up', flow.stepUpError ?? flow.stepUp?.text);

  // A clone: the same key in a second authenticator whose counter starts over.
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  check(credentials.length === 1 && credentials[0].signCount >= 3, 'the authenticator counted each signature', JSON.stringify(credentials.map((c) => c.signCount)));
  await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
  const clone = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: authenticator });
  await cdp.send('WebAuthn.addCredential', { authenticatorId: clone.authenticatorId, credential: { ...credentials[0], signCount: 0 } });
  const cloned = await page.evaluate(async (email) => {
    const options = await api('/api/v1/auth/passkeys/sign-in/options', { email });
    return api('/api/v1/auth/passkeys/sign-in', { ceremony_id: options.json.ceremony_id, credential: await get(options.json.options) });
  }, email);
  check(cloned.status === 401 && cloned.json?.code === 'passkey_cloned', 'a cloned authenticator is refused', cloned.text);

  // A phishing page: another origin of the same host (another port), relaying a challenge it
  // got from the node to an authenticator that holds the passkey. The browser signs for the
  // page's origin, and the node refuses it.
  const phishing = createHttpServer((_, res) => { res.setHeader('content-type', 'text/html'); res.end('<!doctype html><title>sign in</title>'); });
  await new Promise((r) => phishing.listen(0, '127.0.0.1', r));
  const evil = await context.newPage();
  await evil.goto(`http://localhost:${phishing.address().port}/`);
  await evil.evaluate(PAGE_HELPERS);
  const evilCdp = await context.newCDPSession(evil);
  await evilCdp.send('WebAuthn.enable');
  const evilAuth = await evilCdp.send('WebAuthn.addVirtualAuthenticator', { options: authenticator });
  await evilCdp.send('WebAuthn.addCredential', { authenticatorId: evilAuth.authenticatorId, credential: { ...credentials[0], signCount: 1000 } });
  const relay = await (await fetch(`${origin}/api/v1/auth/passkeys/sign-in/options`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email }),
  })).json();
  const phishedCredential = await evil.evaluate((options) => get(options), relay.options);
  const phished = await (await fetch(`${origin}/api/v1/auth/passkeys/sign-in`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ceremony_id: relay.ceremony_id, credential: phishedCredential }),
  })).json();
  check(phished.code === 'passkey_invalid', 'an assertion made for another origin is refused', JSON.stringify(phished));
  phishing.close();
} catch (e) {
  stopped(e);
} finally {
  await browser.close();
  if (node.exitCode === null) node.kill('SIGTERM');
}
finish();
