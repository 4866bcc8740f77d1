// Maps: Leaflet with the node's tile server (or a plain background when it has none or the
// tiles cannot be reached: markers, routes and cells are drawn either way).
import L from 'leaflet';
import { h } from './ui.js';

let config = { tile_url: null, attribution: '' };

export function configureMaps(map) {
  config = map ?? config;
}

export const BERLIN = { lat: 52.52, lng: 13.405 };

/** A map in `el`, centred on `center`. */
export function createMap(el, center = BERLIN, zoom = 13, { label = 'Map' } = {}) {
  el.classList.add('map');
  el.setAttribute('role', 'region');
  el.setAttribute('aria-label', label);
  const map = L.map(el, { zoomControl: true, attributionControl: true, preferCanvas: false });
  map.attributionControl.setPrefix(false);
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { attribution: config.attribution, maxZoom: 19, crossOrigin: false }).addTo(map);
  } else {
    el.classList.add('plain');
  }
  map.setView([center.lat, center.lng], zoom);
  // The container's size is known only once it is laid out.
  requestAnimationFrame(() => map.invalidateSize());
  return map;
}

/** A round marker with a label for screen readers and a tooltip. */
export function pin(map, point, kind, title) {
  const icon = L.divIcon({ className: `pin pin-${kind}`, iconSize: [22, 22], iconAnchor: [11, 11] });
  const marker = L.marker([point.lat, point.lng], { icon, title, alt: title, keyboard: false });
  if (title) marker.bindTooltip(title);
  return marker.addTo(map);
}

/**
 * The courier's marker: an arrow pointing along the heading, gliding from one fix to the
 * next over about a second instead of jumping.
 */
export class MovingMarker {
  constructor(map, title = 'Courier') {
    this.map = map;
    this.arrow = h('span', { class: 'arrow' });
    const html = h('span', { class: 'courier-dot' }, this.arrow);
    this.icon = L.divIcon({ className: 'pin-courier', html, iconSize: [30, 30], iconAnchor: [15, 15] });
    this.marker = null;
    this.title = title;
    this.from = null;
    this.to = null;
    this.start = 0;
    this.span = 1000;
    this.frame = null;
  }

  get position() {
    return this.marker ? this.marker.getLatLng() : null;
  }

  moveTo(point, headingDeg) {
    const target = L.latLng(point.lat, point.lng);
    if (!this.marker) {
      this.marker = L.marker(target, { icon: this.icon, title: this.title, keyboard: false, zIndexOffset: 1000 }).addTo(this.map);
      this.marker.bindTooltip(this.title);
      this.rotate(headingDeg);
      return;
    }
    this.from = this.marker.getLatLng();
    this.to = target;
    this.start = performance.now();
    this.rotate(headingDeg);
    cancelAnimationFrame(this.frame);
    const step = (now) => {
      const t = Math.min(1, (now - this.start) / this.span);
      const eased = t * (2 - t);
      this.marker.setLatLng([
        this.from.lat + (this.to.lat - this.from.lat) * eased,
        this.from.lng + (this.to.lng - this.from.lng) * eased,
      ]);
      if (t < 1) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  rotate(headingDeg) {
    if (typeof headingDeg === 'number' && Number.isFinite(headingDeg)) {
      this.arrow.style.transform = `rotate(${headingDeg}deg)`;
      this.arrow.hidden = false;
    }
  }

  remove() {
    cancelAnimationFrame(this.frame);
    this.marker?.remove();
    this.marker = null;
  }
}

/** Fits the map to the given points (ignoring missing ones). */
export function fit(map, points, maxZoom = 16) {
  const ok = points.filter((p) => p && Number.isFinite(p.lat) && Number.isFinite(p.lng));
  if (ok.length === 0) return;
  if (ok.length === 1) {
    map.setView([ok[0].lat, ok[0].lng], Math.min(maxZoom, 15), { animate: false });
    return;
  }
  map.fitBounds(L.latLngBounds(ok.map((p) => [p.lat, p.lng])), { padding: [36, 36], maxZoom, animate: false });
}

/** Removes a map, stopping whatever animation is under way (a page left mid-zoom). */
export function dispose(map) {
  try {
    map.stop();
    map.off();
    map.remove();
  } catch {
    // Already gone.
  }
}

export function line(map, points, kind = 'route') {
  return L.polyline(points.map((p) => [p.lat, p.lng]), { className: `line-${kind}`, interactive: false }).addTo(map);
}

export function polygon(map, ring, className, tooltip) {
  const shape = L.polygon(ring, { className, weight: 1 }).addTo(map);
  if (tooltip) shape.bindTooltip(tooltip);
  return shape;
}

export { L };
