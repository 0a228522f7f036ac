import { createRequire } from 'node:module';

/**
 * Loads pg's socket module without Node's bundled undici. pg decides at load whether it runs in a
 * Cloudflare Worker: with no global `navigator` (Node 20; Node 21 and later define one) it builds a
 * `Response`, and the first `Response` loads Node's undici: pg took 48–51 ms of CPU to load, 24–27
 * with a `navigator` (each alone in a fresh process, 2-core machine). So the module loads here with
 * a `navigator` like Node 21's, defined for that moment only; pg later finds it in require's cache.
 * Import this before anything imports pg (the CLI's main does).
 */
const global = globalThis as { navigator?: unknown };
if (global.navigator === undefined) {
  global.navigator = { userAgent: `Node.js/${process.versions.node.split('.')[0]}` };
  try {
    createRequire(import.meta.url)('pg/lib/stream.js');
  } finally {
    delete global.navigator;
  }
}
