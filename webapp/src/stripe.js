// Stripe's Payment Element, when the node takes payments through Stripe. Stripe.js must come
// from js.stripe.com (Stripe's terms: never bundled); the page's policy allows that host only
// on nodes configured for Stripe. The order becomes paid by Stripe's webhook, not by this page.
import { explain, h, mount } from './ui.js';

function loadStripe() {
  if (window.Stripe) return Promise.resolve(window.Stripe);
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = 'https://js.stripe.com/v3/';
    script.onload = () => (window.Stripe ? resolve(window.Stripe) : reject(new Error('Stripe.js did not load')));
    script.onerror = () => reject(new Error('Stripe.js could not be loaded'));
    document.head.append(script);
  });
}

export async function payWithStripe(box, publishableKey, clientSecret, total, done) {
  const error = h('p', { class: 'error', role: 'alert' });
  const element = h('div', { class: 'stripe-element' });
  const pay = h('button', { type: 'submit', class: 'primary' }, `Pay ${total}`);
  mount(box, h('h2', { id: 'pay-title' }, `Pay ${total}`), h('p', {}, 'Loading the payment form…'));
  let stripe;
  let elements;
  try {
    const Stripe = await loadStripe();
    stripe = Stripe(publishableKey);
    elements = stripe.elements({ clientSecret });
    elements.create('payment').mount(element);
  } catch (err) {
    mount(box, h('h2', { id: 'pay-title' }, 'Payment'), h('p', { class: 'error', role: 'alert' }, explain(err)));
    return;
  }
  mount(box, h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      pay.disabled = true;
      error.textContent = '';
      const result = await stripe.confirmPayment({
        elements,
        confirmParams: { return_url: `${location.origin}/orders` },
        redirect: 'if_required',
      });
      if (result.error) {
        error.textContent = result.error.message ?? 'The payment did not go through.';
        pay.disabled = false;
        return;
      }
      done();
    },
  }, h('h2', { id: 'pay-title' }, `Pay ${total}`), element, error, pay));
}
