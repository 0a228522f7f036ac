/**
 * The purge under live dispatch, on the big database of bench/big-database.ts (issue 14: purging 1M
 * finished requests while a live batch dispatches at full speed lowers its rate by ≤ 10 % and the
 * claim's p99 stays < 20 ms).
 *
 * A library daemon in a process of its own dispatches a batch of LIVE requests to the mock upstream
 * (a process of its own, 0 ms answers, 64 in flight); the batch's rate is its size over its
 * creation-to-end time (PostgreSQL's clock). Runs alternate quiet / purging (a b b a); a purging run
 * first marks the oldest ended batches holding ~1M requests (and their input files) deleted, then
 * starts `manager.purge()` and the batch together. Meanwhile, in both kinds of run, the harness
 * claims from the pending backlog (ten rows a claim, one claim every 50 ms, each completed after),
 * timing each claim. The backlog's route is given a credential the daemon does not hold, so the
 * daemon sends only the live batch.
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { claimSql } from '../../src/db/sql/queue/claim.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { daemonBatch } from '../daemon-throughput.js';
import { BENCH_DAEMON, type BigDatabase, JIT_OFF_URL, MODELS } from './big-database-build.js';
import { alternate, median, startDaemonProcess, startMockProcess } from './processes.js';

const LIVE = 20_000;
const ROUNDS = 2;
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

export async function purgeUnderDispatch(pool: pg.Pool, s: string, big: BigDatabase): Promise<string[]> {
  await pool.query(`UPDATE ${s}.upstream_routes SET credential = 'key:elsewhere' WHERE id = $1`, [
    big.routeId,
  ]);
  const mock = await startMockProcess(0);
  const daemon = await startDaemonProcess({
    databaseUrl: JIT_OFF_URL,
    schema: s,
    config: { modelConcurrencyLimits: { [MODEL]: 64 } },
  });
  const manager = new PostgresRequestManager(pool, { schema: s, logger: () => {} });
  const quiet: { rate: number; claims: number[] }[] = [];
  const purging: {
    rate: number;
    claims: number[];
    purgeSeconds: number;
    requests: number;
    overlapped: boolean;
  }[] = [];
  try {
    await daemonBatch(manager, mock.url, 2_000, MODEL); // warm-up, untimed
    for (let i = 0; i < ROUNDS * 2; i++) {
      const [kind] = alternate(i, 'quiet', 'purge');
      const loop = claimLoop(pool, s, big.routeId);
      if (kind === 'quiet') {
        const seconds = await daemonBatch(manager, mock.url, LIVE, MODEL);
        quiet.push({ rate: LIVE / seconds, claims: await loop.stop() });
      } else {
        // The oldest ended batches, ~1M requests: deleted as through the API (data goes in the purge).
        await pool.query(
          `WITH old AS (SELECT id, file_id FROM ${s}.batches WHERE deleted_at IS NULL AND finished_at IS NOT NULL
                         ORDER BY created_at LIMIT ${Math.ceil(1_000_000 / 10_000)}),
                files AS (UPDATE ${s}.files f SET deleted_at = now() FROM old WHERE f.id = old.file_id)
           UPDATE ${s}.batches b SET deleted_at = now() FROM old WHERE b.id = old.id`,
        );
        const p0 = performance.now();
        let purgeEnd = 0;
        const purge = manager.purge().then((r) => {
          purgeEnd = performance.now();
          return r;
        });
        const seconds = await daemonBatch(manager, mock.url, LIVE, MODEL);
        const batchEnd = performance.now();
        const claims = await loop.stop();
        const report = await purge;
        purging.push({
          rate: LIVE / seconds,
          claims,
          purgeSeconds: (purgeEnd - p0) / 1000,
          requests: report.requests,
          overlapped: purgeEnd >= batchEnd,
        });
      }
      await pool.query(`VACUUM ${s}.requests`).catch(() => {});
    }
  } finally {
    await daemon.stop();
    await mock.close();
  }
  const q = median(quiet.map((r) => r.rate));
  const p = median(purging.map((r) => r.rate));
  const drop = 1 - p / q;
  const quietClaims = quiet.flatMap((r) => r.claims);
  const purgeClaims = purging.flatMap((r) => r.claims);
  const p99 = pct(purgeClaims, 99);
  return [
    `#### Purging while a batch dispatches (${ROUNDS} quiet and ${ROUNDS} purging runs, alternating)`,
    '',
    `A ${LIVE.toLocaleString('en-US')}-request batch dispatched by a daemon process to the mock (0 ms, 64 in flight); in a purging run`,
    '`manager.purge()` removes the oldest ~1M finished requests (and their templates) at the same time.',
    '',
    '| run | batch rate (each) | claim p50 | claim p99 | purge |',
    '|---|---|---|---|---|',
    `| quiet | ${q.toFixed(0)} req/s (${quiet.map((r) => r.rate.toFixed(0)).join(', ')}) | ${pct(quietClaims, 50).toFixed(2)} ms | ${pct(quietClaims, 99).toFixed(2)} ms | – |`,
    `| purging | ${p.toFixed(0)} req/s (${purging.map((r) => r.rate.toFixed(0)).join(', ')}) | ${pct(purgeClaims, 50).toFixed(2)} ms | ${p99.toFixed(2)} ms | ${purging.map((r) => `${r.requests.toLocaleString('en-US')} requests in ${r.purgeSeconds.toFixed(0)} s${r.overlapped ? '' : ' (ended before the batch)'}`).join('; ')} |`,
    '',
    `Rate lowered by ${(drop * 100).toFixed(1)} % (goal ≤ 10 %: ${drop <= 0.1 ? 'met' : 'NOT met'}); claim p99 while purging ${p99.toFixed(2)} ms (goal < 20 ms: ${p99 < 20 ? 'met' : 'NOT met'}).`,
  ];
}
