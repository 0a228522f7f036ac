import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { Pool as ExportedPool } from 'undici';
import { describe, expect, it } from 'vitest';
import { createDaemonMetrics } from '../../src/daemon/metrics.js';
import { Pool } from '../../src/daemon/undici-pool.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * What a daemon loads before its first request (issue 10: `fusillade run`'s start-up is CPU-bound):
 * undici's Pool without the rest of undici (src/daemon/undici-pool.ts), and no prom-client unless
 * metrics have a registry to be read from (src/daemon/metrics.ts, src/webhooks/delivery.ts).
 */
describe("the daemon's start-up modules", () => {
  it("loads undici's own Pool, with the request API on it", () => {
    expect(Pool).toBe(ExportedPool);
    expect(typeof Pool.prototype.request).toBe('function');
    expect(typeof Pool.prototype.dispatch).toBe('function');
  });

  it('loads neither prom-client nor the rest of undici with a daemon and its webhook deliverer', async () => {
    // A process of its own: this test file's imports load both.
    const script = `
      const { createRequire } = await import('node:module');
      const { PostgresRequestManager } = await import('./src/manager/request-manager.ts');
      await import('./src/daemon/daemon.ts');
      const { WebhookDeliverer } = await import('./src/webhooks/delivery.ts');
      new WebhookDeliverer({ pool: {}, schema: 'x', log: { info() {}, warn() {} } });
      const files = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify({
        manager: typeof PostgresRequestManager,
        promClient: files.filter((f) => f.includes('/node_modules/prom-client/')).length,
        undici: files.filter((f) => f.includes('/node_modules/undici/')).length,
        undiciIndex: files.some((f) => f.endsWith('/node_modules/undici/index.js')),
      }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: root },
    );
    const loaded = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(loaded.manager).toBe('function');
    expect(loaded.promClient).toBe(0);
    expect(loaded.undiciIndex).toBe(false);
    expect(loaded.undici).toBeGreaterThan(0);
  });

  it('counts on the registry given, and does nothing without one', async () => {
    const registry = new Registry();
    const counted = createDaemonMetrics(registry);
    counted.completed.inc({ model: 'm' });
    counted.inFlight.labels({ daemon: 'd', model: 'm' }).inc();
    expect(counted.registry).toBe(registry);
    const text = await registry.metrics();
    expect(text).toContain('fusillade_requests_completed_total{model="m"} 1');
    expect(text).toContain('fusillade_requests_in_flight{daemon="d",model="m"} 1');

    const silent = createDaemonMetrics();
    expect(silent.registry).toBeNull();
    silent.completed.inc({ model: 'm' });
    silent.inFlight.labels({ daemon: 'd', model: 'm' }).dec();
    silent.latency.labels({ model: 'm', outcome: 'ok' }).observe(0.1);
    silent.queueDepth.reset();
    expect(silent.model('m')).toBe('m');
  });
});
