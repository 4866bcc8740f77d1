// Small DOM helpers: elements without innerHTML (nothing the API returns is ever parsed as
// markup), money and times, toasts.

/** An element: `h('button', {class: 'primary', onclick}, 'Save')`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces what `el` holds. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const fractionDigits = new Map();

/** `{amount_minor, currency}` as the reader's locale writes it. */
export function money(m) {
  if (!m || typeof m.amount_minor !== 'number') return '–';
  let digits = fractionDigits.get(m.currency);
  if (digits === undefined) {
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency: m.currency })
        .resolvedOptions().maximumFractionDigits;
    } catch {
      digits = 2;
    }
    fractionDigits.set(m.currency, digits);
  }
  const amount = m.amount_minor / 10 ** digits;
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: m.currency }).format(amount);
  } catch {
    return `${amount.toFixed(digits)} ${m.currency}`;
  }
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function dateTime(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** Seconds as "4 min" / "40 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  return `${Math.round(s / 60)} min`;
}

export function distance(metres) {
  if (metres === null || metres === undefined) return '–';
  return metres < 1000 ? `${Math.round(metres)} m` : `${(metres / 1000).toFixed(1)} km`;
}

/** `3 couriers`, `1 courier`. */
export function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** "ready_for_pickup" → "Ready for pickup". */
export function label(code) {
  if (!code) return '';
  const text = String(code).replaceAll('_', ' ');
  return text[0].toUpperCase() + text.slice(1);
}

export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 7000 : 4000);
}

/** What to tell the user about a failed call. */
export function explain(err) {
  if (err && err.problem) {
    const p = err.problem;
    const fields = (p.errors ?? []).map((e) => `${e.field ?? e.product_id ?? ''}: ${e.message ?? ''}`);
    return [p.detail || p.title || p.code, ...fields].filter(Boolean).join(' — ');
  }
  return err?.message || String(err);
}

/** A labelled form field. */
export function field(labelText, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, labelText), input, hint ? h('small', {}, hint) : null);
}

/** A short two-tone sound for a new order (no file: the Web Audio API makes it). */
export function chime() {
  try {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    chime.ctx ??= new Ctx();
    const ctx = chime.ctx;
    const now = ctx.currentTime;
    [880, 1320].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + i * 0.18);
      osc.stop(now + i * 0.18 + 0.17);
    });
  } catch {
    // Sound is a courtesy; the badge and the list carry the news.
  }
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}
