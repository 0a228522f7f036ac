/**
 * Bench: peak RSS of daemons holding 100,000 requests in flight between them (issue 10: under
 * 200 MB per daemon). DAEMONS library daemons, each a process of its own (bench/children/daemon.ts),
 * each with a mock upstream of its own (bench/children/mock-upstream.ts) that holds every answer
 * for ten minutes, so nothing finishes and every request stays in flight. One socket per request
 * in flight on each side, and a process may open at most 20,000 files on this machine: hence
 * 8 daemons × 12,500 rather than 4 × 25,000. Each daemon has a schema of its own (its own batch of
 * 12,500 rows, its model's limit 12,500), so each mock receives exactly its daemon's requests.
 * Each daemon's RSS is read from /proc every 100 ms from before its batch is created until all
 * 100,000 are at the mocks and 2 s after. Baseline in the same run: the same daemons idle.
 * Standalone: `node --import tsx bench/inflight-memory.ts [daemons] [perDaemon]`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { PostgresRequestManager } from '../src/manager/request-manager.js';
import { TEST_DATABASE_URL } from '../test/support/db.js';
import {
  type DaemonProcess,
  type MockProcess,
  startDaemonProcess,
  startMockProcess,
  tag,
} from './support/processes.js';

const HOLD_MS = 600_000;

function rssMb(pid: number): number {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    return kb / 1024;
  } catch {
    return 0;
  }
}

export async function benchInflightMemory(options: { daemons?: number; perDaemon?: number } = {}) {
  const n = options.daemons ?? 8;
  const per = options.perDaemon ?? 12_500;
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  const schemas: string[] = [];
  const mocks: MockProcess[] = [];
  const daemons: DaemonProcess[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const schema = tag('bench_inflight');
      schemas.push(schema);
      await migrate(pool, { schema });
      mocks.push(await startMockProcess(HOLD_MS));
    }
    for (let i = 0; i < n; i++) {
      daemons.push(
        await startDaemonProcess({
          databaseUrl: TEST_DATABASE_URL,
          schema: schemas[i]!,
          poolMax: 2,
          config: { defaultModelConcurrency: per, shutdownGraceMs: 0, requestTimeoutMs: HOLD_MS },
        }),
      );
    }
    const idle = daemons.map((d) => rssMb(d.pid));
    const peak = [...idle];
    const sample = () => {
      daemons.forEach((d, i) => {
        peak[i] = Math.max(peak[i]!, rssMb(d.pid));
      });
    };
    const sampler = setInterval(sample, 100);
    const started = performance.now();
    try {
      for (let i = 0; i < n; i++) {
        const manager = new PostgresRequestManager(pool, { schema: schemas[i]!, logger: () => {} });
        async function* templates() {
          for (let k = 0; k < per; k++) {
            yield {
              endpoint: mocks[i]!.url,
              method: 'POST',
              path: '/v1/chat/completions',
              body: JSON.stringify({ model: 'held', messages: [{ role: 'user', content: `hello ${k}` }] }),
              model: 'held',
              apiKey: 'sk-bench',
              customId: `h-${k}`,
            };
          }
        }
        const fileId = await manager.createFileStream('held.jsonl', null, templates());
        await manager.createBatch(fileId);
      }
      // Until every request is at a mock (a deadline only against a hang).
      let atMocks = 0;
      const deadline = Date.now() + 600_000;
      while (Date.now() < deadline) {
        const stats = await Promise.all(mocks.map((m) => m.stats()));
        atMocks = stats.reduce((s, x) => s + x.inFlight, 0);
        if (atMocks >= n * per) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      const rampSeconds = (performance.now() - started) / 1000;
      await new Promise((r) => setTimeout(r, 2000));
      sample();
      const now = daemons.map((d) => rssMb(d.pid));
      const worst = Math.max(...peak);
      const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
      return {
        markdown: [
          `### Peak RSS with ${(n * per).toLocaleString('en-US')} requests in flight over ${n} daemons`,
          '',
          `${n} daemon processes × ${per.toLocaleString('en-US')} requests held in flight (a mock upstream per daemon, in a process of its own, holding every answer), each daemon in a schema of its own with its model limited to ${per.toLocaleString('en-US')}. One socket per request on each side, and at most 20,000 open files per process here: 8 × 12,500 rather than 4 × 25,000. The daemons run from source under tsx (bench/children/daemon.ts), whose loader is part of the idle figure.`,
          '',
          '| measure | per daemon, MB |',
          '|---|---|',
          `| baseline: the same daemons idle, before their batches | ${fmt(idle)} |`,
          `| peak from batch creation until all are in flight + 2 s | ${fmt(peak)} |`,
          `| all in flight, 2 s later | ${fmt(now)} |`,
          '',
          `${atMocks.toLocaleString('en-US')} of ${(n * per).toLocaleString('en-US')} at the mocks ${rampSeconds.toFixed(1)} s after the first batch was created. Goal peak < 200 MB per daemon: ${worst < 200 && atMocks >= n * per ? 'met' : 'NOT met'} (worst ${worst.toFixed(0)} MB).`,
        ].join('\n'),
      };
    } finally {
      clearInterval(sampler);
    }
  } finally {
    await Promise.all(daemons.map((d) => d.stop().catch(() => {})));
    await Promise.all(mocks.map((m) => m.close().catch(() => {})));
    for (const s of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`).catch(() => {});
    await pool.end();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const daemons = process.argv[2] ? Number(process.argv[2]) : undefined;
  const perDaemon = process.argv[3] ? Number(process.argv[3]) : undefined;
  benchInflightMemory({ daemons, perDaemon }).then(
    (r) => console.log(r.markdown),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
