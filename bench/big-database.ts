/**
 * Bench (issue 14): a year of traffic on one PostgreSQL. BENCH_BIG_FINISHED finished requests (default
 * 10,000,000, in ended batches of 10,000) and BENCH_BIG_PENDING pending ones (default 100,000), built
 * with INSERT … SELECT (bench/support/big-database-build.ts). Then:
 *  - every API list/status read and every dashboard read, 30 times each (p50, p95; goal p95 < 50 ms),
 *    the EXPLAIN (ANALYZE, BUFFERS) of each of their statements written to docs/big-database-plans.md;
 *  - the daemon's claim (src/db/sql/queue/claim.ts, one statement over the ten models), 300 times,
 *    each claimed row completed afterwards, untimed (goal p99 < 20 ms);
 *  - the purge, at the daemons' pace, on a backlog of ~1M deleted requests while a daemon dispatches
 *    a live batch, against quiet runs (bench/support/big-database-purge.ts; BENCH_BIG_PURGE=0 skips
 *    it, BENCH_BIG_PURGE_ROUNDS=n sets the rounds, BENCH_BIG_PURGE_PACE=p another pace).
 * Bodies are short (BENCH_BIG_BODY_BYTES, default 200) so that 10M rows fit the disk and the time:
 * every read here walks an index, and a read that scanned a table would miss the goal anyway.
 *
 * Opt-in: `npm run bench -- big-database` (the full `npm run bench` skips it: it writes ~10 GB).
 * BENCH_BIG_SCHEMA=name builds into that schema and keeps it for the next run (drop it after); a run on
 * a kept schema first puts its live batches back to 100k pending (bench/support/big-database-reset.ts).
 * BENCH_BIG_READS=0 skips the reads (claims, and the purge unless BENCH_BIG_PURGE=0, only).
 * Standalone: `node --import tsx bench/big-database.ts`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { claimSql } from '../src/db/sql/queue/claim.js';
import { PostgresRequestManager } from '../src/manager/request-manager.js';
import { listBatchesWithStatus } from '../src/store/reads/api/batch-page.js';
import { listMessageBatches } from '../src/store/reads/api/message-batches.js';
import { listBatchOverviews } from '../src/store/reads/dashboard/batch-list.js';
import { operations } from '../src/store/reads/dashboard/operations.js';
import { batchProgress } from '../src/store/reads/dashboard/progress.js';
import {
  failureSummary,
  getRequestDetail,
  listRequestSummaries,
} from '../src/store/reads/dashboard/requests.js';
import { SendsMemory } from '../src/store/reads/dashboard/sends-memory.js';
import { batchThroughput } from '../src/store/reads/dashboard/throughput.js';
import {
  BENCH_DAEMON,
  type BigDatabase,
  buildBigDatabase,
  JIT_OFF_URL,
  MODELS,
} from './support/big-database-build.js';
import { purgeUnderDispatch } from './support/big-database-purge.js';
import { resetLiveBatches } from './support/big-database-reset.js';

const RUNS = 30;
const CLAIMS = 300;
const PLANS = fileURLToPath(new URL('../docs/big-database-plans.md', import.meta.url));

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

interface Recorded {
  text: string;
  values: unknown[];
}

/** The pool as the reads see it, recording the statements they send (for EXPLAIN). */
function recording(pool: pg.Pool, into: Recorded[] | null): pg.Pool {
  return new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop === 'query') {
        return (q: string | pg.QueryConfig, values?: unknown[]) => {
          if (into) {
            const text = typeof q === 'string' ? q : q.text;
            into.push({ text, values: (typeof q === 'string' ? values : (q.values ?? values)) ?? [] });
          }
          return target.query(q as string, values);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

type Read = [name: string, run: (pool: pg.Pool) => Promise<unknown>];

function reads(s: string, db: BigDatabase, manager: (pool: pg.Pool) => PostgresRequestManager): Read[] {
  const owner = 'alice';
  const ended = db.ended.batchId;
  const live = db.live.batchId;
  const liveOwner = null; // the live batch may be any owner's; the dashboard of an admin sees all
  const sends = new SendsMemory();
  return [
    [
      'API GET /v1/batches (page of 20, counts, upstreams)',
      (p) => listBatchesWithStatus(p, s, { owner, limit: 20, deadDaemonAfterMs: 30_000 }),
    ],
    [
      'API GET /v1/batches?after= (a page half-way down the list)',
      (p) =>
        listBatchesWithStatus(p, s, { owner, limit: 20, after: db.deepBatchId, deadDaemonAfterMs: 30_000 }),
    ],
    [
      'API GET /v1/batches/{id} (ended)',
      async (p) => {
        const m = manager(p);
        await Promise.all([
          m.getBatch(ended, { owner }),
          m.getBatchStatus(ended, { owner }),
          m.getBatchUpstreams(ended, { owner }),
        ]);
      },
    ],
    [
      'API GET /v1/batches/{id} (live, 5,000 requests)',
      async (p) => {
        const m = manager(p);
        await Promise.all([m.getBatch(live), m.getBatchStatus(live), m.getBatchUpstreams(live)]);
      },
    ],
    ['API GET /v1/files (page of 20)', (p) => manager(p).listFiles({ owner, limit: 20 })],
    ['API GET /v1/files/{id} (output file)', (p) => manager(p).getFile(db.ended.outputFileId, { owner })],
    ['API GET /v1/messages/batches (page of 20)', (p) => listMessageBatches(p, s, { owner, limit: 20 })],
    [
      'library getBatchRequests (first 100 of an ended batch)',
      (p) => manager(p).getBatchRequests(ended, { owner, limit: 100 }),
    ],
    [
      'library getBatchRequests (failed of an ended batch)',
      (p) => manager(p).getBatchRequests(ended, { owner, state: 'failed', limit: 100 }),
    ],
    ['dashboard batches list (page of 20)', (p) => listBatchOverviews(p, s, { owner })],
    ['dashboard batches list, search (no match)', (p) => listBatchOverviews(p, s, { owner, search: 'zzz' })],
    ['dashboard batch page: progress (ended)', (p) => batchProgress(p, s, ended, owner)],
    ['dashboard batch page: progress (live)', (p) => batchProgress(p, s, live, liveOwner)],
    ['dashboard requests table (ended, first 50)', (p) => listRequestSummaries(p, s, ended, { owner })],
    [
      'dashboard requests table (ended, failed)',
      (p) => listRequestSummaries(p, s, ended, { owner, state: 'failed' }),
    ],
    [
      'dashboard requests table (ended, by latency)',
      (p) => listRequestSummaries(p, s, ended, { owner, sort: 'latency' }),
    ],
    [
      'dashboard requests table (ended, custom_id search)',
      (p) => listRequestSummaries(p, s, ended, { owner, search: 'req-9999' }),
    ],
    [
      'dashboard requests table (live, pending)',
      (p) => listRequestSummaries(p, s, live, { owner: liveOwner, state: 'pending' }),
    ],
    ['dashboard request detail', (p) => getRequestDetail(p, s, ended, db.ended.requestId, owner)],
    ['dashboard failure summary (ended)', (p) => failureSummary(p, s, ended, owner)],
    ['dashboard throughput (ended)', (p) => batchThroughput(p, s, ended, owner)],
    ['dashboard throughput (live)', (p) => batchThroughput(p, s, live, liveOwner)],
    [
      // As the server polls it (every 2 s per open tab): each poll reads the sends since the previous.
      'dashboard operations (polled)',
      (p) => operations(p, s, { defaultModelConcurrency: 16, deadDaemonAfterMs: 30_000, sends }),
    ],
    [
      // A server's first poll (per owner) reads every send of its 15-minute window.
      'dashboard operations (first poll)',
      (p) => operations(p, s, { defaultModelConcurrency: 16, deadDaemonAfterMs: 30_000 }),
    ],
  ];
}

async function explain(pool: pg.Pool, statements: Recorded[]): Promise<string[]> {
  const out: string[] = [];
  for (const st of statements) {
    if (!/^\s*(SELECT|WITH)/i.test(st.text)) continue;
    const { rows } = await pool.query(`EXPLAIN (ANALYZE, BUFFERS) ${st.text}`, st.values);
    out.push(
      '```sql',
      st.text.trim().replace(/\s+\n/g, '\n'),
      '```',
      '```',
      ...rows.map((r) => r['QUERY PLAN'] as string),
      '```',
      '',
    );
  }
  return out;
}

async function claims(
  pool: pg.Pool,
  s: string,
  routeId: number,
): Promise<{
  p50: number;
  p99: number;
  max: number;
  perClaim: number;
  plans: { generic: number; custom: number };
}> {
  const client = await pool.connect();
  const times: number[] = [];
  let plans = { generic: 0, custom: 0 };
  let claimed = 0;
  try {
    const models = Array.from({ length: MODELS }, (_, m) => `model-${m}`);
    const values = [
      models,
      models.map(() => 10),
      models.map(() => 0),
      BENCH_DAEMON,
      600_000,
      models.map(() => `{${routeId}}`),
    ];
    for (let i = 0; i < CLAIMS + 10; i++) {
      const t0 = performance.now();
      const { rows } = await client.query({ name: 'big_claim', text: claimSql(s), values });
      if (i >= 10) {
        times.push(performance.now() - t0);
        claimed += rows.length;
      }
      await client.query(
        `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200, response_body = '{}',
                daemon_id = NULL, lease_expires_at = NULL WHERE id = ANY($1::uuid[])`,
        [rows.map((r) => r.id)],
      );
    }
    // Whether the named statement ran a generic plan or was planned at every execution (custom plans).
    const prepared = await client.query(
      `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'big_claim'`,
    );
    plans = {
      generic: Number(prepared.rows[0].generic_plans),
      custom: Number(prepared.rows[0].custom_plans),
    };
  } finally {
    client.release();
  }
  times.sort((a, b) => a - b);
  return {
    p50: pct(times, 50),
    p99: pct(times, 99),
    max: times[times.length - 1]!,
    perClaim: claimed / CLAIMS,
    plans,
  };
}

export async function benchBigDatabase(
  options: { finished?: number; pending?: number; bodyBytes?: number } = {},
): Promise<{ markdown: string }> {
  const finished = options.finished ?? Number(process.env.BENCH_BIG_FINISHED ?? 10_000_000);
  const pending = options.pending ?? Number(process.env.BENCH_BIG_PENDING ?? 100_000);
  const bodyBytes = options.bodyBytes ?? Number(process.env.BENCH_BIG_BODY_BYTES ?? 200);
  // BENCH_BIG_SCHEMA=name keeps the database in that schema (built on the first run, reused by the
  // next ones, whose live batches are first put back to their built state: resetLiveBatches). Drop it after.
  const keep = process.env.BENCH_BIG_SCHEMA;
  const db = await benchDb(keep ?? `t_${randomBytes(6).toString('hex')}`, !keep);
  const s = db.schema;
  try {
    const saved = keep
      ? await db.pool.query(`SELECT info FROM ${s}.bench_big_database`).catch(() => null)
      : null;
    const big: BigDatabase =
      saved?.rows[0]?.info ??
      (await buildBigDatabase(db.pool, s, { finished, pending, perBatch: 10_000, bodyBytes }));
    if (keep && !saved) {
      await db.pool.query(`CREATE TABLE ${s}.bench_big_database AS SELECT $1::jsonb AS info`, [big]);
    }
    const reset = saved?.rows[0] ? await resetLiveBatches(db.pool, s, big) : null;
    const rows: string[] = [];
    const plans: string[] = [
      '# Plans of the API and dashboard reads on a big database',
      '',
      `Written by bench/big-database.ts (${finished.toLocaleString('en-US')} finished requests, ${pending.toLocaleString('en-US')} pending), ${new Date().toISOString()}. EXPLAIN (ANALYZE, BUFFERS) of every statement each read sends, after its timed runs.`,
      '',
    ];
    // BENCH_BIG_READS=0 skips the reads (and leaves docs/big-database-plans.md alone): claims only.
    const timeReads = process.env.BENCH_BIG_READS !== '0';
    let worst = 0;
    if (timeReads) {
      const managerOf = (p: pg.Pool) => new PostgresRequestManager(p, { schema: s });
      for (const [name, run] of reads(s, big, managerOf)) {
        const plain = recording(db.pool, null);
        await run(plain);
        const times: number[] = [];
        for (let i = 0; i < RUNS; i++) {
          const t = performance.now();
          await run(plain);
          times.push(performance.now() - t);
        }
        times.sort((a, b) => a - b);
        worst = Math.max(worst, pct(times, 95));
        rows.push(`| ${name} | ${pct(times, 50).toFixed(1)} | ${pct(times, 95).toFixed(1)} |`);
        const statements: Recorded[] = [];
        await run(recording(db.pool, statements));
        plans.push(`## ${name}`, '', ...(await explain(db.pool, statements)));
      }
      writeFileSync(PLANS, `${plans.join('\n')}\n`);
      // Formatted as the repository's formatter wants it (tables, code blocks), so `biome check .` stays clean.
      try {
        execFileSync(
          fileURLToPath(new URL('../node_modules/.bin/biome', import.meta.url)),
          ['format', '--write', PLANS],
          {
            stdio: 'ignore',
          },
        );
      } catch {
        process.stderr.write('could not format docs/big-database-plans.md with biome\n');
      }
    }
    const claim = await claims(db.pool, s, big.routeId);
    const purge = process.env.BENCH_BIG_PURGE === '0' ? [] : await purgeUnderDispatch(db.pool, s, big);
    const gb = (b: number) => `${(b / 1024 ** 3).toFixed(2)} GB`;
    return {
      markdown: [
        `### A big database: ${finished.toLocaleString('en-US')} finished + ${pending.toLocaleString('en-US')} pending requests`,
        '',
        `Built with INSERT … SELECT in ${big.buildSeconds.toFixed(0)} s: ${big.finishedBatches.toLocaleString('en-US')} ended batches of 10,000 (four owners, over 30 days, one in ten a message batch, 1 % failed),`,
        `${big.liveBatches} live batches of 5,000 over ${MODELS} models, 64 in flight; bodies ~${bodyBytes} B. Stored: ${gb(big.bytes.total)} (requests ${gb(big.bytes.requests)}, templates ${gb(big.bytes.templates)}).`,
        reset
          ? `Kept schema ${s} (built by an earlier run): its live batches were put back to their built state first (${reset.rows.toLocaleString('en-US')} rows rewritten, ${reset.pending.toLocaleString('en-US')} pending), then VACUUM (ANALYZE) requests, in ${reset.seconds.toFixed(0)} s. Ended batches still stored: ${reset.endedBatches.toLocaleString('en-US')} of ${big.finishedBatches.toLocaleString('en-US')} (earlier purge runs removed the others).`
          : `Built for this run${keep ? ` (kept as schema ${s})` : ''}.`,
        `Reads run ${RUNS} times each after one warm-up, as owner alice (a quarter of the batches); plans in docs/big-database-plans.md.`,
        '',
        ...(timeReads
          ? [
              '| read | p50 ms | p95 ms |',
              '|---|---|---|',
              ...rows,
              '',
              `Goal every read p95 < 50 ms: ${worst < 50 ? 'met' : 'NOT met'} (worst p95 ${worst.toFixed(1)} ms).`,
              '',
            ]
          : ['(reads skipped: BENCH_BIG_READS=0)', '']),
        `Claim (one statement over the ${MODELS} models, want 10 each, ${claim.perClaim.toFixed(0)} rows per claim, ${CLAIMS} claims): p50 ${claim.p50.toFixed(2)} ms, p99 ${claim.p99.toFixed(2)} ms, max ${claim.max.toFixed(2)} ms (the named statement ran ${claim.plans.generic} generic and ${claim.plans.custom} custom plans). Goal p99 < 20 ms: ${claim.p99 < 20 ? 'met' : 'NOT met'}.`,
        '',
        ...purge,
      ].join('\n'),
    };
  } finally {
    await db.close();
  }
}

async function benchDb(schema: string, drop: boolean) {
  const pool = new pg.Pool({ connectionString: JIT_OFF_URL, max: 6 });
  await migrate(pool, { schema });
  return {
    pool,
    schema,
    async close() {
      if (drop) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await pool.end();
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log((await benchBigDatabase()).markdown);
}
