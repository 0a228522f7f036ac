import { createRequire } from 'node:module';
import type { Pool as UndiciPool } from 'undici';

/**
 * undici's Pool without the rest of undici. The package's index loads 110 files (fetch, WebSocket,
 * caches, mocks, proxies, …) of which the daemon needs the Pool (22 files) and the request API that
 * the index puts on every dispatcher's prototype (`pool.request`, used by sendAbortable; the
 * dispatcher's own path is `pool.dispatch`). Loading these three as the index does, in isolation
 * on the 2-core machine at load ≈ 4: 70–118 ms of CPU against 200–290 ms for `import 'undici'`,
 * and `fusillade run` loads it before its first request (issue 10: start-up is CPU-bound).
 * undici has no `exports` map, so these paths are reachable; the version is pinned, and
 * test/daemon/start-up-modules.test.ts checks that this Pool is the one the package exports.
 */
const require = createRequire(import.meta.url);
const Dispatcher = require('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
const api = require('undici/lib/api/index.js') as object;
Object.assign(Dispatcher.prototype, api);

export const Pool = require('undici/lib/dispatcher/pool.js') as typeof UndiciPool;
export type Pool = UndiciPool;
export type PoolOptions = UndiciPool.Options;
