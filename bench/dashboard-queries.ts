/**
 * How long the dashboard's reads take against a large backlog: one live batch of ROWS requests
 * (mostly pending, some finished, some in flight), 40 ended batches, and an ended 20k batch.
 * The dashboard polls every 1.5–2 s, so each read should stay far below that.
 *
 *   node --import tsx bench/dashboard-queries.ts   (BENCH_ROWS=200000 by default)
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { listBatchOverviews } from '../src/store/reads/dashboard/batch-list.js';
import { operations } from '../src/store/reads/dashboard/operations.js';
import { listRequestSummaries } from '../src/store/reads/dashboard/requests.js';
import { batchThroughput } from '../src/store/reads/dashboard/throughput.js';
import { createTestDb, template } from '../test/support/db.js';

const RUNS = 30;

/** Seeds a fresh schema, times each read RUNS times and returns a markdown report. */
export async function benchDashboardQueries(
  ROWS = Number(process.env.BENCH_ROWS ?? 200_000),
): Promise<string> {
  const out: string[] = [];
  const db = await createTestDb({ max: 4 });
  const m = db.manager();
  const s = m.schema;
  try {
    const seedStart = performance.now();
    async function batchOf(n: number, owner: string) {
      async function* templates() {
        for (let i = 0; i < n; i++) yield template(i);
      }
      const file = await m.createFileStream('bench', null, templates(), { owner });
      return m.createBatch(file, { owner });
    }
    // Older batches first, so the live one is on the list's first page.
    const ended = await batchOf(20_000, 'alice');
    await db.pool.query(
      `UPDATE ${s}.requests SET state = 'completed', attempt = 1, started_at = now() - interval '2 minutes',
              completed_at = now() - (line_number % 60) * interval '1 second', response_status = 200, response_body = '{}'
        WHERE batch_id = $1`,
      [ended],
    );
    await m.finalizeBatch(ended);
    for (let i = 0; i < 40; i++) {
      const b = await batchOf(50, 'alice');
      await m.cancelBatch(b);
    }
    const big = await batchOf(ROWS, 'alice');
    // A tenth finished over the last 10 minutes (1% of them failed), 64 in flight, the rest pending.
    const daemon = randomUUID();
    await db.pool.query(
      `UPDATE ${s}.requests SET state = CASE WHEN line_number % 100 = 0 THEN 'failed' ELSE 'completed' END,
              attempt = 1, completed_at = now() - (line_number % 600) * interval '1 second',
              started_at = now() - (line_number % 600 + 1) * interval '1 second', response_status = 200,
              response_body = '{"ok":true}'
        WHERE batch_id = $1 AND line_number <= $2`,
      [big, Math.floor(ROWS / 10)],
    );
    await db.pool.query(
      `UPDATE ${s}.requests SET state = 'processing', daemon_id = $2, claimed_at = now(), started_at = now(),
              lease_expires_at = now() + interval '1 hour'
        WHERE batch_id = $1 AND line_number BETWEEN $3 AND $3 + 63`,
      [big, daemon, Math.floor(ROWS / 10) + 1],
    );
    await db.pool.query(`INSERT INTO ${s}.daemons (id, host, pid) VALUES ($1, 'bench', 1)`, [daemon]);
    await db.pool.query(`ANALYZE ${s}.requests`);
    await db.pool.query(`ANALYZE ${s}.batches`);
    await db.pool.query(`ANALYZE ${s}.request_templates`);
    const seedSeconds = (performance.now() - seedStart) / 1000;

    const cases: [string, () => Promise<unknown>][] = [
      [
        'batches list, page of 20 (live counts + rate)',
        () => listBatchOverviews(db.pool, s, { owner: 'alice' }),
      ],
      [
        'batches list, search in metadata (no match)',
        () => listBatchOverviews(db.pool, s, { owner: 'alice', search: 'zzz' }),
      ],
      ['requests table, first page of 50', () => listRequestSummaries(db.pool, s, big, { owner: 'alice' })],
      [
        'requests table, state = failed',
        () => listRequestSummaries(db.pool, s, big, { owner: 'alice', state: 'failed' }),
      ],
      [
        'requests table, state = pending',
        () => listRequestSummaries(db.pool, s, big, { owner: 'alice', state: 'pending' }),
      ],
      [
        'requests table, custom_id search (rare)',
        () => listRequestSummaries(db.pool, s, big, { owner: 'alice', search: 'req-1999' }),
      ],
      ['throughput of the live batch', () => batchThroughput(db.pool, s, big, 'alice')],
      ['throughput of the ended 20k batch', () => batchThroughput(db.pool, s, ended, 'alice')],
      [
        'operations (load, dispatch, daemons, queue)',
        () => operations(db.pool, s, { defaultModelConcurrency: 16, deadDaemonAfterMs: 30_000 }),
      ],
    ];
    out.push(
      `### Dashboard reads (live batch of ${ROWS.toLocaleString('en-US')} requests, a tenth finished; ${RUNS} runs each)\n`,
      `Each read runs on every refresh (1.5–2 s) of an open page, so each should stay far below that.`,
      `Seeded in ${seedSeconds.toFixed(1)} s: the live batch, an ended 20k batch and 40 cancelled ones.\n`,
    );
    out.push('| read | p50 ms | p95 ms |');
    out.push('|---|---|---|');
    for (const [name, run] of cases) {
      await run(); // warm
      const times: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const t = performance.now();
        await run();
        times.push(performance.now() - t);
      }
      times.sort((a, b) => a - b);
      const p = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!.toFixed(1);
      out.push(`| ${name} | ${p(0.5)} | ${p(0.95)} |`);
    }
  } finally {
    await db.close();
  }
  return out.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await benchDashboardQueries());
}
