// The H3 functions the operations map uses, bundled on their own (see build.mjs).
export { cellToBoundary, cellToLatLng, latLngToCell } from 'h3-js';
