// signin.mjs BIN WORK_DIR: sign-in with an OpenID Connect provider, from outside. A real
// provider on loopback (oauth2-mock-server: discovery, JWKS, RS256-signed ID tokens, PKCE
// checked, codes single-use) and a hexmarket node of its own configured for it; a client that
// knows only the README and the document signs up, signs in again, links, unlinks, and is
// refused on a replayed callback, a replayed code, a wrong nonce, a wrong audience, an expired
// token, a token signed with a key the provider never published, a provider error, and a link
// finished by another client; the provider rotates its key midway; a flow survives a SIGKILL
// of the node between its two halves.
import { mkdirSync } from 'node:fs';
import { OAuth2Server } from 'oauth2-mock-server';
import { chromium } from 'playwright-core';
import { SignJWT, generateKeyPair, decodeProtectedHeader } from 'jose';
import { checklist, freePort, startNode as start } from './node-probe.mjs';

const [bin, work] = process.argv.slice(2);
const { log, check, stopped, finish } = checklist('signin');

// The provider.
const provider = new OAuth2Server();
const firstKey = await provider.issuer.keys.generate('RS256');
await provider.start(await freePort(), '127.0.0.1');
const issuer = provider.issuer.url;
log(`provider at ${issuer}`);

// What the provider asserts in the next ID token, and how the next answer is tampered with.
let next = {};
const issuedKids = [];
provider.service.on('beforeTokenSigning', (token) => {
  Object.assign(token.payload, { aud: 'hexmarket-probe' }, next);
});
provider.service.on('beforeResponse', (response) => {
  if (response.body?.id_token) issuedKids.push(decodeProtectedHeader(response.body.id_token).kid);
});

// The node.
const port = await freePort();
const data = `${work}/data`;
mkdirSync(data, { recursive: true });
const base = `http://127.0.0.1:${port}`;
const env = {
  HEXMARKET_DATA_DIR: data,
  HEXMARKET_OIDC_PROVIDERS: 'probe',
  HEXMARKET_OIDC_PROBE_ISSUER: issuer,
  HEXMARKET_OIDC_PROBE_CLIENT_ID: 'hexmarket-probe',
  HEXMARKET_OIDC_PROBE_CLIENT_SECRET: 'probe-secret',
  HEXMARKET_OIDC_PROBE_DISPLAY_NAME: 'Probe ID',
};
let node = null;
async function startNode() {
  node = await start(bin, port, env);
}
function stopAll() {
  if (node && node.exitCode === null) node.kill('SIGTERM');
  provider.stop().catch(() => {});
}

async function call(method, path, { body, token, cookie, form } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (cookie) headers.cookie = cookie;
  let payload;
  if (form) { headers['content-type'] = 'application/x-www-form-urlencoded'; payload = new URLSearchParams(form).toString(); }
  else if (body !== undefined) { headers['content-type'] = 'application/json'; payload = JSON.stringify(body); }
  const response = await fetch(path.startsWith('http') ? path : `${base}${path}`, { method, headers, body: payload, redirect: 'manual' });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, json, text, headers: response.headers };
}

// Starts a flow, lets the provider authorize it, and answers the callback URL and the cookie.
async function authorize({ intent, token } = {}) {
  const started = await call('POST', '/api/v1/auth/oidc/probe/start', { body: intent ? { intent } : undefined, token });
  if (started.status !== 200) throw new Error(`start answered ${started.status}: ${started.text}`);
  const cookie = (started.headers.get('set-cookie') || '').split(';')[0];
  const url = new URL(started.json.authorization_url);
  if (!url.searchParams.get('code_challenge') || url.searchParams.get('code_challenge_method') !== 'S256' || !url.searchParams.get('nonce')) {
    throw new Error(`the authorization URL lacks PKCE or a nonce: ${url}`);
  }
  const redirect = await fetch(url, { redirect: 'manual' });
  const callback = redirect.headers.get('location');
  if (!callback) throw new Error(`the provider did not redirect (${redirect.status})`);
  return { callback, cookie, state: started.json.state, nonce: url.searchParams.get('nonce') };
}

async function signIn(claims, options = {}) {
  next = claims;
  const { callback, cookie } = await authorize(options);
  return { answer: await call('GET', callback, { cookie, token: options.token }), callback, cookie };
}

const problem = (r) => r.json?.code ?? `${r.status} ${r.text.slice(0, 200)}`;

try {
  await startNode();

  const providers = await call('GET', '/api/v1/auth/oidc/providers');
  check(providers.status === 200 && providers.json?.[0]?.name === 'probe'
    && providers.json[0].redirect_uri === `${base}/api/v1/auth/oidc/probe/callback`,
  'the provider is listed with the redirect URI to register', providers.text);

  // A first sign-in makes a customer account with no password.
  const alice = { sub: 'alice-123', email: 'alice@probe.example.com', email_verified: true, name: 'Alice Example' };
  const first = await signIn(alice);
  check(first.answer.status === 200 && first.answer.json.outcome === 'signed_in' && first.answer.json.account_created === true,
    'a first sign-in signs up', first.answer.text);
  check((first.answer.headers.get('set-cookie') || '').includes('hexmarket_refresh='),
    'the browser that started the flow gets the refresh cookie');
  const aliceToken = first.answer.json.access_token;
  const me = await call('GET', '/api/v1/me', { token: aliceToken });
  check(me.json?.email === alice.email && me.json.email_verified === true && me.json.has_password === false
    && me.json.linked_identities === 1 && me.json.role === 'customer', 'the new account is the provider\'s user', me.text);

  // The same callback again: its state is spent.
  const replayed = await call('GET', first.callback, { cookie: first.cookie });
  check(replayed.status === 400 && replayed.json?.code === 'oidc_state_mismatch', 'a replayed callback is refused', problem(replayed));

  // The same code with a fresh state: the provider refuses it (used, and PKCE differs).
  const fresh = await authorize();
  const oldCode = new URL(first.callback).searchParams.get('code');
  const swapped = new URL(fresh.callback); swapped.searchParams.set('code', oldCode);
  const replayedCode = await call('GET', swapped.toString(), { cookie: fresh.cookie });
  check(replayedCode.status === 400 && replayedCode.json?.code === 'oidc_code_rejected', 'a replayed code is refused', problem(replayedCode));

  // Signing in again finds the account; no cookie means no refresh cookie, the tokens still answer.
  next = alice;
  const again = await authorize();
  const second = await call('GET', again.callback);
  check(second.status === 200 && second.json.outcome === 'signed_in' && second.json.account_created === false
    && !(second.headers.get('set-cookie') || '').includes('hexmarket_refresh='),
  'a second sign-in finds the account; a callback from another browser sets no cookie', second.text);

  // Tampered tokens.
  for (const [what, claims] of [
    ['a wrong nonce', { ...alice, nonce: 'forged-nonce' }],
    ['a wrong audience', { ...alice, aud: 'another-client' }],
    ['an expired token', { ...alice, iat: Math.floor(Date.now() / 1000) - 7200, exp: Math.floor(Date.now() / 1000) - 3600 }],
    ['a wrong issuer', { ...alice, iss: 'https://issuer.example.evil' }],
  ]) {
    const { answer } = await signIn(claims);
    check(answer.status === 401 && answer.json?.code === 'oidc_token_invalid', `${what} is refused`, problem(answer));
  }

  // A token signed with a key the provider never published (under the provider's key id,
  // with the flow's own nonce: only the signature is wrong).
  {
    next = alice;
    const { callback, cookie, nonce } = await authorize();
    const forger = await generateKeyPair('RS256');
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({ sub: alice.sub, aud: 'hexmarket-probe', iss: issuer, iat: now, exp: now + 600, nonce, email: alice.email, email_verified: true })
      .setProtectedHeader({ alg: 'RS256', kid: firstKey.kid }).sign(forger.privateKey);
    const swap = (response) => { if (response.body?.id_token) response.body.id_token = forged; };
    provider.service.on('beforeResponse', swap);
    const answer = await call('GET', callback, { cookie });
    provider.service.removeListener('beforeResponse', swap);
    check(answer.status === 401 && answer.json?.code === 'oidc_token_invalid', 'a token signed with an unpublished key is refused', problem(answer));
  }

  // The provider rotates: a new key joins, and tokens signed with it are taken once the node
  // reads the keys again.
  const rotated = await provider.issuer.keys.generate('RS256');
  const before = issuedKids.length;
  let rotatedOk = true;
  for (let i = 0; i < 3 && !issuedKids.slice(before).includes(rotated.kid); i++) {
    const { answer } = await signIn(alice);
    rotatedOk &&= answer.status === 200 && answer.json.outcome === 'signed_in';
  }
  check(rotatedOk && issuedKids.slice(before).includes(rotated.kid), 'tokens signed with a rotated key are taken', JSON.stringify(issuedKids.slice(before)));

  // The provider answers an error.
  {
    next = alice;
    const { callback, cookie } = await authorize();
    const url = new URL(callback);
    url.searchParams.delete('code');
    url.searchParams.set('error', 'access_denied');
    url.searchParams.set('error_description', 'The user said no');
    const answer = await call('GET', url.toString(), { cookie });
    check(answer.status === 400 && answer.json?.code === 'oidc_provider_error', 'a provider error is reported', problem(answer));
  }

  // Form POST callback (what Apple sends) works like the GET.
  {
    next = { sub: 'form-user', email: 'form@probe.example.com', email_verified: true };
    const { callback, cookie } = await authorize();
    const url = new URL(callback);
    const answer = await call('POST', `${url.origin}${url.pathname}`, { cookie, form: Object.fromEntries(url.searchParams) });
    check(answer.status === 200 && answer.json.outcome === 'signed_in', 'a form POST callback signs in', answer.text);
  }

  // An existing password account with the same email: never linked silently.
  const bobEmail = 'bob@probe.example.com';
  const bobPassword = 'correct horse battery staple';
  const registered = await call('POST', '/api/v1/auth/register', { body: { email: bobEmail, password: bobPassword, name: 'Bob', role: 'customer' } });
  check(registered.status === 201, 'bob registers with a password', registered.text);
  const unverified = await signIn({ sub: 'bob-unverified', email: bobEmail, email_verified: false });
  check(unverified.answer.status === 409 && unverified.answer.json?.code === 'oidc_email_unverified',
    'an unverified email of an existing account is refused', problem(unverified.answer));
  const bob = { sub: 'bob-456', email: bobEmail, email_verified: true };
  const needsProof = await signIn(bob);
  check(needsProof.answer.status === 200 && needsProof.answer.json.outcome === 'link_required' && !needsProof.answer.json.access_token,
    'a verified email of an existing account asks for proof', needsProof.answer.text);
  const linkToken = needsProof.answer.json.link_token;
  const wrong = await call('POST', '/api/v1/auth/oidc/link', { body: { link_token: linkToken, password: 'not bob\'s password at all' } });
  check(wrong.status === 401 && wrong.json?.code === 'invalid_credentials', 'a wrong password links nothing', problem(wrong));
  const linked = await call('POST', '/api/v1/auth/oidc/link', { body: { link_token: linkToken, password: bobPassword } });
  check(linked.status === 200 && linked.json.access_token, 'the right password links and signs in', linked.text);
  const bobToken = linked.json.access_token;
  const reused = await call('POST', '/api/v1/auth/oidc/link', { body: { link_token: linkToken, password: bobPassword } });
  check(reused.status === 400 && reused.json?.code === 'ceremony_unknown', 'a link token works once', problem(reused));
  const bobAgain = await signIn(bob);
  check(bobAgain.answer.json?.outcome === 'signed_in' && bobAgain.answer.json.account_created === false,
    'the linked identity now signs in to bob', bobAgain.answer.text);
  const bobIdentities = await call('GET', '/api/v1/me/identities', { token: bobToken });
  check(bobIdentities.status === 200 && bobIdentities.json.length === 1 && bobIdentities.json[0].subject === 'bob-456',
    'bob sees the linked identity', bobIdentities.text);

  // Linking from a signed-in account: only that account can finish it.
  const carolEmail = 'carol@probe.example.com';
  await call('POST', '/api/v1/auth/register', { body: { email: carolEmail, password: bobPassword, name: 'Carol', role: 'customer' } });
  const carolLogin = await call('POST', '/api/v1/auth/login', { body: { email: carolEmail, password: bobPassword } });
  const carolToken = carolLogin.json.access_token;
  next = { sub: 'carol-work', email: 'carol@work.example.com', email_verified: true };
  const carolFlow = await authorize({ intent: 'link', token: carolToken });
  const stranger = await call('GET', carolFlow.callback);
  check(stranger.status === 400 && stranger.json?.code === 'oidc_state_mismatch', 'a link finished by another client is refused', problem(stranger));
  const carolFlow2 = await authorize({ intent: 'link', token: carolToken });
  const carolLinked = await call('GET', carolFlow2.callback, { token: carolToken });
  check(carolLinked.status === 200 && carolLinked.json.outcome === 'linked' && carolLinked.json.identity?.provider === 'probe',
    'a signed-in account links a provider identity', carolLinked.text);
  const noBearer = await call('POST', '/api/v1/auth/oidc/probe/start', { body: { intent: 'link' } });
  check(noBearer.status === 401, 'linking without a bearer token is refused', problem(noBearer));

  // Unlinking: never the last way in.
  const aliceIdentities = await call('GET', '/api/v1/me/identities', { token: aliceToken });
  const aliceLast = await call('DELETE', `/api/v1/me/identities/${aliceIdentities.json[0].id}`, { token: aliceToken });
  check(aliceLast.status === 409 && aliceLast.json?.code === 'last_sign_in_method', 'the last way to sign in stays', problem(aliceLast));
  const carolIdentities = await call('GET', '/api/v1/me/identities', { token: carolToken });
  const carolUnlink = await call('DELETE', `/api/v1/me/identities/${carolIdentities.json[0].id}`, { token: carolToken });
  check(carolUnlink.status === 204, 'an identity beside a password is unlinked', carolUnlink.text);
  next = { sub: 'carol-work', email: 'carol@work.example.com', email_verified: true };
  const afterUnlink = await signIn(next);
  check(afterUnlink.answer.json?.outcome === 'signed_in' && afterUnlink.answer.json.account_created === true,
    'the unlinked identity no longer reaches carol', afterUnlink.answer.text);

  // Bad input.
  const unknownProvider = await call('POST', '/api/v1/auth/oidc/nobody/start');
  check(unknownProvider.status === 404 && unknownProvider.json?.code === 'oidc_provider_unknown', 'an unknown provider is 404', problem(unknownProvider));
  const noState = await call('GET', '/api/v1/auth/oidc/probe/callback?code=abc');
  check(noState.status === 400 && noState.json?.code === 'oidc_state_mismatch', 'a callback without state is refused', problem(noState));
  const madeUp = await call('GET', '/api/v1/auth/oidc/probe/callback?code=abc&state=made-up');
  check(madeUp.status === 400 && madeUp.json?.code === 'oidc_state_mismatch', 'a made-up state is refused', problem(madeUp));

  // A flow survives a SIGKILL of the node between its two halves.
  next = alice;
  const pending = await authorize();
  node.kill('SIGKILL');
  await new Promise((r) => node.once('exit', r));
  await startNode();
  const afterCrash = await call('GET', pending.callback, { cookie: pending.cookie });
  check(afterCrash.status === 200 && afterCrash.json.outcome === 'signed_in', 'a flow started before a SIGKILL finishes after it', afterCrash.text);
  const stillBob = await call('GET', '/api/v1/me/identities', { token: (await signIn(bob)).answer.json.access_token });
  check(stillBob.json?.length === 1, 'linked identities survive the SIGKILL', stillBob.text);

  // The web app in a browser: the provider's button on the sign-in page, the provider, its
  // callback (a top-level navigation: a redirect back to the app, the outcome in the
  // fragment), and the app signed in through its session cookie.
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 60_000,
  });
  try {
    const page = await (await browser.newContext()).newPage();
    next = { sub: 'dora-browser', email: 'dora@browser.example.com', email_verified: true, name: 'Dora Browser' };
    await page.goto(`${base}/signin`);
    await page.getByRole('button', { name: 'Continue with Probe ID' }).click();
    await page.waitForURL(`${base}/`, { timeout: 20_000 });
    await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 10_000 });
    check(true, "the web app's provider button signs a new customer in and lands on the stores");
    // A provider answer that is refused shows on the sign-in page, not as JSON.
    next = { sub: 'dora-browser', email: 'dora@browser.example.com', email_verified: true, aud: 'someone-else' };
    const other = await (await browser.newContext()).newPage();
    await other.goto(`${base}/signin`);
    await other.getByRole('button', { name: 'Continue with Probe ID' }).click();
    await other.getByText('oidc_token_invalid').waitFor({ timeout: 20_000 });
    check(new URL(other.url()).pathname === '/signin', 'a refused provider answer brings the browser back to the sign-in page with the reason');
  } finally {
    await browser.close();
  }
} catch (e) {
  stopped(e);
} finally {
  stopAll();
}
finish();
