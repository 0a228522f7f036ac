/**
 * The purge under live dispatch, on the big database of bench/big-database.ts (issue 14: purging 1M
 * finished requests while a live batch dispatches at full speed lowers its rate by ≤ 10 % and the
 * claim's p99 stays < 20 ms).
 *
 * A library daemon in a process of its own dispatches a batch of LIVE requests to the mock upstream
 * (a process of its own, 0 ms answers, 64 in flight); the batch's rate is its size over its
 * creation-to-end time (PostgreSQL's clock). Runs alternate quiet / purging (a b b a …, ROUNDS of
 * each, BENCH_BIG_PURGE_ROUNDS); every run starts settled (big-database-purge-run.ts: VACUUM,
 * CHECKPOINT, the previous run's batch removed). A purging run first tops the purge's backlog up to
 * ~1M requests of deleted ended batches (as deleted through the API, with their input files), then
 * runs the purge as daemons do (DAEMON_PURGE_PACE, or BENCH_BIG_PURGE_PACE) from the batch's start
 * to its end, when it is stopped: at the daemons' pace 1M takes longer than the batch, and what it
 * left is the next purging run's backlog. Meanwhile, in both kinds of run, the harness claims from
 * the pending backlog (ten rows a claim, one claim every 50 ms, each completed after), timing each
 * claim. The backlog's route is given a credential the daemon does not hold, so the daemon sends
 * only the live batch. The daemon's own purge and compression are off: they would start on their
 * timer in some runs and not others (the compression on the 10M ended rows).
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { DAEMON_PURGE_PACE, type PurgeReport, purge } from '../../src/db/purge.js';
import { claimSql } from '../../src/db/sql/queue/claim.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { daemonBatch } from '../daemon-throughput.js';
import { BENCH_DAEMON, type BigDatabase, JIT_OFF_URL, MODELS } from './big-database-build.js';
import { measuredRun, type RunFigures, settle } from './big-database-purge-run.js';
import { alternate, BackendCpu, median, startDaemonProcess, startMockProcess, tag } from './processes.js';

const LIVE = 20_000;
const ROUNDS = Number(process.env.BENCH_BIG_PURGE_ROUNDS ?? 3);
const PACE = Number(process.env.BENCH_BIG_PURGE_PACE ?? DAEMON_PURGE_PACE);
const BACKLOG = 1_000_000;
const MODEL = 'live-bench';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? Number.NaN;
};

/** Claims from the backlog until stopped; returns each claim's time in ms. */
function claimLoop(pool: pg.Pool, s: string, routeId: number) {
  let stop = false;
  const times: number[] = [];
  const done = (async () => {
    const client = await pool.connect();
    try {
      const models = Array.from({ length: MODELS }, (_, m) => `model-${m}`);
      const values = [
        models,
        models.map(() => 1),
        models.map(() => 0),
        BENCH_DAEMON,
        600_000,
        models.map(() => `{${routeId}}`),
      ];
      while (!stop) {
        const t0 = performance.now();
        const { rows } = await client.query({ name: 'purge_bench_claim', text: claimSql(s), values });
        times.push(performance.now() - t0);
        await client.query(
          `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200, response_body = '{}',
                  daemon_id = NULL, lease_expires_at = NULL WHERE id = ANY($1::uuid[])`,
          [rows.map((r) => r.id)],
        );
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      client.release();
    }
  })();
  return {
    async stop() {
      stop = true;
      await done;
      return times;
    },
  };
}

/** Marks the oldest ended batches deleted (and their input files) until ~1M requests await the purge. */
async function topUpBacklog(pool: pg.Pool, s: string): Promise<number> {
  const waiting = async () =>
    (
      await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${s}.requests
          WHERE batch_id IN (SELECT id FROM ${s}.batches WHERE deleted_at IS NOT NULL)`,
      )
    ).rows[0]!.n;
  const have = await waiting();
  const batches = Math.ceil(Math.max(0, BACKLOG - have) / 10_000);
  if (batches > 0) {
    await pool.query(
      `WITH old AS (SELECT id, file_id FROM ${s}.batches WHERE deleted_at IS NULL AND finished_at IS NOT NULL
                     ORDER BY created_at LIMIT ${batches}),
            files AS (UPDATE ${s}.files f SET deleted_at = now() FROM old WHERE f.id = old.file_id)
       UPDATE ${s}.batches b SET deleted_at = now() FROM old WHERE b.id = old.id`,
    );
  }
  return waiting();
}

interface PurgeRun extends RunFigures {
  claims: number[];
  backlog: number;
  report: PurgeReport;
  purgeSeconds: number;
}

export async function purgeUnderDispatch(pool: pg.Pool, s: string, big: BigDatabase): Promise<string[]> {
  await pool.query(`UPDATE ${s}.upstream_routes SET credential = 'key:elsewhere' WHERE id = $1`, [
    big.routeId,
  ]);
  const mock = await startMockProcess(0);
  const daemon = await startDaemonProcess({
    databaseUrl: JIT_OFF_URL,
    schema: s,
    config: {
      modelConcurrencyLimits: { [MODEL]: 64 },
      compressFinishedBodies: false,
      purgeIntervalMs: 24 * 3600_000,
    },
  });
  const purgeApp = tag('bench_purge');
  const purgeUrl = new URL(JIT_OFF_URL);
  purgeUrl.searchParams.set('application_name', purgeApp);
  const purgePool = new pg.Pool({ connectionString: purgeUrl.toString(), max: 2 });
  const manager = new PostgresRequestManager(pool, { schema: s, logger: () => {} });
  const quiet: (RunFigures & { claims: number[] })[] = [];
  const purging: PurgeRun[] = [];
  try {
    // Warm-up, untimed: the daemon's budgets, its claim's plans, the mock's connections.
    await daemonBatch(manager, mock.url, LIVE, MODEL);
    for (let i = 0; i < ROUNDS * 2; i++) {
      const [kind] = alternate(i, 'quiet', 'purge');
      const backlog = kind === 'purge' ? await topUpBacklog(pool, s) : 0;
      await settle(pool, s);
      const loop = claimLoop(pool, s, big.routeId);
      if (kind === 'quiet') {
        const figures = await measuredRun(manager, daemon, mock.url, LIVE, MODEL, {
          start() {},
          async stop() {},
          pgCpu: null,
        });
        quiet.push({ ...figures, claims: await loop.stop() });
      } else {
        let stopping = false;
        let running: Promise<PurgeReport> | null = null;
        let t0 = 0;
        let purgeSeconds = 0;
        const figures = await measuredRun(manager, daemon, mock.url, LIVE, MODEL, {
          start() {
            t0 = performance.now();
            running = purge(purgePool, s, { pace: PACE, whenBusy: 'skip', shouldStop: () => stopping });
          },
          async stop() {
            stopping = true;
            await running;
            purgeSeconds = (performance.now() - t0) / 1000;
          },
          pgCpu: new BackendCpu(pool, purgeApp),
        });
        const report = await running!;
        purging.push({ ...figures, claims: await loop.stop(), backlog, report, purgeSeconds });
      }
    }
  } finally {
    await daemon.stop();
    await mock.close();
    await purgePool.end();
  }
  return describe(quiet, purging);
}

function describe(quiet: (RunFigures & { claims: number[] })[], purging: PurgeRun[]): string[] {
  const q = median(quiet.map((r) => r.rate));
  const p = median(purging.map((r) => r.rate));
  const drop = 1 - p / q;
  const spread = (xs: number[]) => ((Math.max(...xs) - Math.min(...xs)) / median(xs)) * 100;
  const quietClaims = quiet.flatMap((r) => r.claims);
  const purgeClaims = purging.flatMap((r) => r.claims);
  const p99 = pct(purgeClaims, 99);
  const purged = purging.reduce((n, r) => n + r.report.requests, 0);
  const purgedTemplates = purging.reduce((n, r) => n + r.report.templates, 0);
  const purgeTime = purging.reduce((n, r) => n + r.purgeSeconds, 0);
  const perSecond = purged / purgeTime;
  const row = (kind: string, r: RunFigures & { claims: number[] }, extra: string) =>
    `| ${kind} | ${r.rate.toFixed(0)} | ${r.load.toFixed(1)} | ${r.daemonUs.toFixed(0)} / ${r.daemonPgUs.toFixed(0)} | ${pct(r.claims, 50).toFixed(2)} / ${pct(r.claims, 99).toFixed(2)} | ${r.walMb.toFixed(0)} (${r.ourWalMb.toFixed(0)}) | ${r.checkpoints} | ${extra} |`;
  const rows: string[] = [];
  for (let i = 0, qi = 0, pi = 0; i < quiet.length + purging.length; i++) {
    const [kind] = alternate(i, 'quiet', 'purge');
    if (kind === 'quiet') rows.push(row('quiet', quiet[qi++]!, '–'));
    else {
      const r = purging[pi++]!;
      rows.push(
        row(
          'purging',
          r,
          `${r.report.requests.toLocaleString('en-US')} requests + ${r.report.templates.toLocaleString('en-US')} templates in ${r.purgeSeconds.toFixed(1)} s (backlog ${r.backlog.toLocaleString('en-US')}), ${r.purgePgMs.toFixed(0)} ms CPU`,
        ),
      );
    }
  }
  return [
    `#### Purging while a batch dispatches (${quiet.length} quiet and ${purging.length} purging runs, alternating)`,
    '',
    `A ${LIVE.toLocaleString('en-US')}-request batch dispatched by a daemon process to the mock (0 ms, 64 in flight). In a purging run`,
    `the purge runs as daemons run it, at pace ${PACE}${PACE === DAEMON_PURGE_PACE ? ' (DAEMON_PURGE_PACE)' : ` (BENCH_BIG_PURGE_PACE; the daemons' is ${DAEMON_PURGE_PACE})`}, from the batch's start to its end, on a backlog of ~1M deleted requests.`,
    'Every run starts after VACUUM and CHECKPOINT; the daemon process neither purges nor compresses on its own.',
    '',
    "| run | rate req/s | load | CPU µs/req daemon / its PG | claim p50 / p99 ms | WAL MB (this schema's statements) | checkpoints | purge (PG CPU) |",
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    "Where each run's WAL went (pg_stat_statements, the three largest statements):",
    '',
    ...[
      ...quiet.map((r, i) => `- quiet ${i + 1}: ${r.topWal}`),
      ...purging.map((r, i) => `- purging ${i + 1}: ${r.topWal}`),
    ],
    '',
    `Medians: quiet ${q.toFixed(0)} req/s (spread ${spread(quiet.map((r) => r.rate)).toFixed(0)} %), purging ${p.toFixed(0)} req/s (spread ${spread(purging.map((r) => r.rate)).toFixed(0)} %);`,
    `daemon CPU per request quiet ${median(quiet.map((r) => r.daemonUs)).toFixed(0)} µs (its PG ${median(quiet.map((r) => r.daemonPgUs)).toFixed(0)}), purging ${median(purging.map((r) => r.daemonUs)).toFixed(0)} µs (${median(purging.map((r) => r.daemonPgUs)).toFixed(0)}).`,
    `Claims: quiet p50 ${pct(quietClaims, 50).toFixed(2)} / p99 ${pct(quietClaims, 99).toFixed(2)} ms, purging p50 ${pct(purgeClaims, 50).toFixed(2)} / p99 ${p99.toFixed(2)} ms.`,
    `The purge at this pace: ${purged.toLocaleString('en-US')} requests and ${purgedTemplates.toLocaleString('en-US')} templates in ${purgeTime.toFixed(1)} s, ${perSecond.toFixed(0)} requests/s while the machine dispatched (${((perSecond * 86400 * 30) / 1e9).toFixed(1)}B requests a month; 1M in ~${(1e6 / perSecond).toFixed(0)} s).`,
    '',
    `Rate lowered by ${(drop * 100).toFixed(1)} % (goal ≤ 10 %: ${drop <= 0.1 ? 'met' : 'NOT met'}); claim p99 while purging ${p99.toFixed(2)} ms (goal < 20 ms: ${p99 < 20 ? 'met' : 'NOT met'}).`,
  ];
}
