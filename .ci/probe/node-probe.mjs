// What the Node probes share: a checklist that logs each check, free loopback ports, and a
// hexmarket node started with its own environment (stopped by the caller, by its process).
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

/// A checklist tagged `tag`: `check(ok, what, detail)` logs ok or FAIL; `finish()` exits with
/// the outcome.
export function checklist(tag) {
  let failures = 0;
  const log = (m) => process.stderr.write(`[${tag} ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const check = (ok, what, detail) => {
    if (ok) { log(`ok   ${what}`); } else { failures++; log(`FAIL ${what}${detail ? `: ${detail}` : ''}`); }
  };
  const stopped = (e) => { failures++; log(`FAIL the probe stopped: ${e.stack || e}`); };
  const finish = () => {
    log(failures === 0 ? `${tag} probe passed` : `${tag} probe: ${failures} failure(s)`);
    process.exit(failures === 0 ? 0 : 1);
  };
  return { log, check, stopped, finish };
}

/// Starts `bin serve` listening on 127.0.0.1:`port` with `env` added; resolves once /health
/// answers. The process is killed when this one exits.
export async function startNode(bin, port, env) {
  const node = spawn(bin, ['serve'], {
    env: {
      ...process.env,
      HEXMARKET_LISTEN: `127.0.0.1:${port}`,
      HEXMARKET_COOKIE_SECURE: 'false',
      HEXMARKET_LOG: 'warn',
      HEXMARKET_WORKERS: '2',
      HEXMARKET_ACTOR_THREADS: '2',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  process.on('exit', () => { if (node.exitCode === null) node.kill('SIGKILL'); });
  for (let i = 0; i < 150; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return node; } catch { /* not yet */ }
    if (node.exitCode !== null) break;
    await sleep(200);
  }
  throw new Error('hexmarket did not become healthy');
}
