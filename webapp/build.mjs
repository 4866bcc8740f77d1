// Bundles the app into dist/, which the server compiles into its binary (src/http/webapp.rs).
// The output is committed; CI builds it again from the lockfile and fails when it differs,
// so every step here must be deterministic (esbuild is; gzip gets no timestamp from zlib).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const dist = new URL('./dist/', import.meta.url);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const common = {
  bundle: true,
  minify: true,
  legalComments: 'eof',
  target: ['chrome110', 'firefox110', 'safari16'],
  logLevel: 'warning',
  write: false,
};

const hash = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 12);
const files = new Map();

// h3-js is large and only the operations map needs it: a module of its own, imported on demand.
const h3 = await build({ ...common, entryPoints: ['src/h3.js'], format: 'esm', outfile: 'dist/h3.js' });
files.set('h3.js', h3.outputFiles[0].contents);

const app = await build({
  ...common,
  entryPoints: ['src/main.js'],
  format: 'esm',
  outfile: 'dist/app.js',
  external: ['./h3.js*'],
  define: { H3_MODULE: JSON.stringify(`./h3.js?v=${hash(files.get('h3.js'))}`) },
});
files.set('app.js', app.outputFiles[0].contents);

const css = await build({
  ...common,
  entryPoints: ['src/app.css'],
  outfile: 'dist/app.css',
  loader: { '.png': 'dataurl', '.svg': 'dataurl' },
});
files.set('app.css', css.outputFiles[0].contents);

files.set('icon.svg', readFileSync('src/icon.svg'));
files.set('manifest.webmanifest', readFileSync('src/manifest.webmanifest'));

const page = readFileSync('src/index.html', 'utf8').replace(
  /\{\{(\S+?)\}\}/g,
  (_, name) => `/assets/${name}?v=${hash(files.get(name))}`,
);
files.set('index.html', Buffer.from(page));

let scripts = 0;
for (const [name, bytes] of files) {
  const gz = gzipSync(bytes, { level: 9 });
  writeFileSync(new URL(name, dist), bytes);
  writeFileSync(new URL(`${name}.gz`, dist), gz);
  if (name.endsWith('.js')) scripts += gz.length;
  console.log(`${name.padEnd(22)} ${String(bytes.length).padStart(8)} B  ${String(gz.length).padStart(7)} B gzip`);
}
console.log(`JavaScript in all: ${(scripts / 1024).toFixed(1)} KiB gzip`);
if (scripts > 250 * 1024) {
  console.error('over the 250 KiB budget of JavaScript');
  process.exit(1);
}
