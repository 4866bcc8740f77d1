// Signing up and in (password with a second factor when the account has one, passkeys,
// identity providers), and the account page (profile, passkeys, sessions).
import { adopt, api, currentUser, logout, mergeGuestCart, refresh } from '../api.js';
import { homeOf, navigate } from '../nav.js';
import { explain, field, h, mount, toast } from '../ui.js';
import { passkeyCreate, passkeyGet, passkeysSupported } from '../webauthn.js';

function nextPath(user) {
  const next = new URLSearchParams(location.search).get('next');
  // Only a path of this site: never a redirect elsewhere.
  if (next && next.startsWith('/') && !next.startsWith('//')) return next;
  return homeOf(user);
}

async function signedIn(user) {
  await mergeGuestCart(user);
  toast(`Signed in as ${user.name || user.email}`);
  navigate(nextPath(user), { replace: true });
}

export async function signIn(main) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username webauthn', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', { type: 'text', name: 'otp', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 11 });
  const codeField = field('Authenticator code (or a recovery code)', code);
  codeField.hidden = true;
  const error = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');

  const form = h('form', {
    class: 'card narrow', 'aria-labelledby': 'signin-title', onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      submit.disabled = true;
      const second = {};
      const c = code.value.trim();
      if (c) second[/^\d{6}$/.test(c) ? 'otp' : 'recovery_code'] = c;
      try {
        const tokens = await api('POST', '/auth/login', { body: { email: email.value.trim(), password: password.value, ...second }, retry: false });
        await signedIn(await adopt(tokens));
      } catch (err) {
        if (err.code === 'second_factor_required') {
          codeField.hidden = false;
          code.focus();
          error.textContent = 'This account has an authenticator: enter its current code.';
        } else {
          error.textContent = explain(err);
        }
      } finally {
        submit.disabled = false;
      }
    },
  },
  h('h1', { id: 'signin-title' }, 'Sign in'),
  field('Email', email), field('Password', password), codeField, error, submit,
  h('p', {}, 'New here? ', h('a', { href: `/signup${location.search}` }, 'Create an account')));

  const others = h('div', { class: 'card narrow' }, h('h2', {}, 'Other ways to sign in'));
  if (passkeysSupported()) {
    others.append(h('button', {
      type: 'button', onclick: async () => {
        error.textContent = '';
        try {
          const { ceremony_id, options } = await api('POST', '/auth/passkeys/sign-in/options', { body: email.value.trim() ? { email: email.value.trim() } : {} });
          const credential = await passkeyGet(options);
          const tokens = await api('POST', '/auth/passkeys/sign-in', { body: { ceremony_id, credential }, retry: false });
          await signedIn(await adopt(tokens));
        } catch (err) {
          error.textContent = err.name === 'NotAllowedError' ? 'The passkey prompt was closed.' : explain(err);
        }
      },
    }, 'Sign in with a passkey'));
  }
  const providers = await api('GET', '/auth/oidc/providers').catch(() => []);
  for (const p of providers ?? []) {
    others.append(h('button', {
      type: 'button', onclick: async () => {
        try {
          sessionStorage.setItem('hexmarket.next', nextPath(null));
          const { authorization_url } = await api('POST', `/auth/oidc/${encodeURIComponent(p.name)}/start`, { body: { intent: 'sign_in' } });
          location.assign(authorization_url);
        } catch (err) {
          error.textContent = explain(err);
        }
      },
    }, `Continue with ${p.display_name}`));
  }
  mount(main, form, others.childElementCount > 1 ? others : null);
  await finishProviderReturn(error);
}

/**
 * Back from an identity provider: the callback set the session cookie and sent the browser
 * here with its outcome in the fragment (never sent to any server).
 */
async function finishProviderReturn(error) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const outcome = fragment.get('oidc');
  if (!outcome) return;
  history.replaceState(null, '', location.pathname + location.search);
  if (outcome === 'linked') {
    toast('The identity provider is linked to your account');
    navigate('/account', { replace: true });
    return;
  }
  if (outcome === 'error') {
    error.textContent = `The identity provider sign-in failed: ${fragment.get('code') ?? 'unknown error'}.`;
    return;
  }
  if (outcome === 'link_required') {
    const linkToken = fragment.get('link_token');
    const password = h('input', { type: 'password', autocomplete: 'current-password', required: true });
    const code = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'one-time-code' });
    const box = h('form', {
      class: 'card narrow', onsubmit: async (event) => {
        event.preventDefault();
        try {
          const body = { link_token: linkToken, password: password.value };
          if (code.value.trim()) body.otp = code.value.trim();
          const answer = await api('POST', '/auth/oidc/link', { body, retry: false });
          await signedIn(await adopt(answer));
        } catch (err) {
          error.textContent = explain(err);
        }
      },
    }, h('h2', {}, 'Link your account'),
    h('p', {}, `An account with the email ${fragment.get('email') ?? ''} exists: prove it is yours to link the identity provider to it.`),
    field('Password of that account', password), field('Authenticator code, if it has one', code),
    h('button', { type: 'submit', class: 'primary' }, 'Link and sign in'));
    document.getElementById('main').prepend(box);
    return;
  }
  if (await refresh()) {
    const user = currentUser();
    const next = sessionStorage.getItem('hexmarket.next');
    sessionStorage.removeItem('hexmarket.next');
    await mergeGuestCart(user);
    navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : homeOf(user), { replace: true });
  }
}

export async function signUp(main) {
  const name = h('input', { type: 'text', autocomplete: 'name', required: true, maxlength: 100 });
  const email = h('input', { type: 'email', autocomplete: 'email', required: true });
  const password = h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: 10 });
  const role = h('select', {},
    h('option', { value: 'customer' }, 'Customer: order from stores'),
    h('option', { value: 'vendor' }, 'Vendor: run a store'),
    h('option', { value: 'courier' }, 'Courier: deliver orders'));
  const error = h('p', { class: 'error', role: 'alert' });
  mount(main, h('form', {
    class: 'card narrow', onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        await api('POST', '/auth/register', { body: { name: name.value.trim(), email: email.value.trim(), password: password.value, role: role.value }, retry: false });
        const tokens = await api('POST', '/auth/login', { body: { email: email.value.trim(), password: password.value }, retry: false });
        await signedIn(await adopt(tokens));
      } catch (err) {
        error.textContent = explain(err);
      }
    },
  }, h('h1', {}, 'Create an account'),
  field('Name', name), field('Email', email), field('Password', password, 'At least 10 characters, not a common one.'),
  field('I want to', role), error, h('button', { type: 'submit', class: 'primary' }, 'Create account'),
  h('p', {}, 'Have an account? ', h('a', { href: `/signin${location.search}` }, 'Sign in'))));
}

export async function account(main) {
  const me = await api('GET', '/me');
  const passkeys = h('ul', { class: 'plain-list' });
  const error = h('p', { class: 'error', role: 'alert' });
  const listPasskeys = async () => {
    const items = await api('GET', '/me/passkeys').catch(() => []);
    mount(passkeys, (items ?? []).map((p) => h('li', {}, `${p.name ?? 'Passkey'} — added ${new Date(p.created_at).toLocaleDateString()}`,
      ' ', h('button', {
        type: 'button', class: 'link', onclick: async () => {
          try {
            await api('DELETE', `/me/passkeys/${encodeURIComponent(p.id)}`);
            await listPasskeys();
          } catch (err) {
            error.textContent = explain(err);
          }
        },
      }, 'Remove'))));
    if (!passkeys.childElementCount) passkeys.append(h('li', {}, 'No passkeys yet.'));
  };
  await listPasskeys();
  mount(main,
    h('h1', {}, 'Your account'),
    h('section', { class: 'card' },
      h('dl', { class: 'facts' },
        h('dt', {}, 'Name'), h('dd', {}, me.name),
        h('dt', {}, 'Email'), h('dd', {}, me.email, me.email_verified ? ' (verified)' : ' (not verified)'),
        h('dt', {}, 'Role'), h('dd', {}, me.role),
        h('dt', {}, 'Authenticator'), h('dd', {}, me.totp_enabled ? 'on' : 'off'))),
    h('section', { class: 'card' }, h('h2', {}, 'Passkeys'), passkeys,
      passkeysSupported() ? h('button', {
        type: 'button', onclick: async () => {
          error.textContent = '';
          try {
            const { ceremony_id, options } = await api('POST', '/auth/passkeys/register/options', { body: {} });
            const credential = await passkeyCreate(options);
            await api('POST', '/auth/passkeys/register', { body: { ceremony_id, credential, name: 'This device' } });
            toast('Passkey added');
            await listPasskeys();
          } catch (err) {
            error.textContent = err.code === 'recent_sign_in_required'
              ? 'Sign in again (within the last 5 minutes) to add a passkey.'
              : explain(err);
          }
        },
      }, 'Add a passkey') : h('p', {}, 'This browser has no passkey support.'), error),
    h('section', { class: 'card' }, h('h2', {}, 'Sessions'),
      h('button', {
        type: 'button', onclick: async () => {
          await api('POST', '/auth/logout-all').catch(() => null);
          await logout();
          navigate('/');
        },
      }, 'Sign out everywhere')));
}
