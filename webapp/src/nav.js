// Moving between the app's screens without reloading the page (main.js renders on the event).

const HOME = { customer: '/', vendor: '/vendor', courier: '/courier', admin: '/admin' };

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  window.dispatchEvent(new Event('hexmarket:navigate'));
}

/** Where a user of this role starts. */
export function homeOf(user) {
  return (user && HOME[user.role]) || '/';
}
