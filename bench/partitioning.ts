/**
 * Bench (issue 14): retention by the chunked purge against retention by partitions, on the same data.
 *
 * Each run builds BENCH_PART_FINISHED finished requests (default 2,000,000, in ended batches of
 * 10,000 spread over 30 days, ~200 B bodies) and BENCH_PART_PENDING pending ones (default 100,000,
 * in live batches over ten models) with INSERT … SELECT (bench/support/big-database-build.ts), in
 * one of two designs:
 *  - heap: today's `requests` table; the oldest half goes through the chunked purge
 *    (src/db/purge.ts: 10,000 rows per transaction);
 *  - partitioned: a copy of `requests` partitioned by range of `created_at` (a request is created
 *    with its batch, so this is the batch's creation time: time-ordered), one partition a day, the
 *    primary key and the unique (batch_id, line_number) index extended with `created_at` (PostgreSQL
 *    requires the key in every unique index); the oldest half goes by `DETACH PARTITION …
 *    CONCURRENTLY` + `DROP TABLE` of each day before the cutoff, then the same purge for what
 *    partitions do not hold (templates, batches, files; it finds no requests left).
 * In both, the batches created before a day boundary near the middle are deleted as through the API
 * first. Measured per run:
 *  - the hot path before removing: the daemon's claim (src/db/sql/queue/claim.ts, one statement over
 *    the ten models, want 10 each) and the completing UPDATE by `id = ANY(…)`, CLAIMS times each;
 *    neither names the partition key, so neither is pruned;
 *  - the removal's time and WAL (pg_stat_statements' wal_bytes of this schema's statements, so other
 *    sessions' writes on the shared server are not counted; the claim loop's are excluded);
 *  - the claim's latency on the pending backlog while removing (one claim of one row per model,
 *    completed after, every 20 ms).
 * Runs alternate heap / partitioned (a b b a), BENCH_PART_ROUNDS pairs (default 2); medians.
 *
 * Opt-in (each run builds its database afresh, ~1 GB at 2M rows): `npm run bench -- partitioning`.
 * Standalone: `node --import tsx bench/partitioning.ts`.
 *
 * Measured at 500k finished rows: partitions remove the requests with under 1 % of the chunked
 * purge's WAL, but a claim touches 3.3× the buffers and a completion 2.7× at 31 daily partitions
 * (no pruning). Figures and the decision (the chunked purge stays): docs/decisions/retention.md.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { purge } from '../src/db/purge.js';
import { claimSql } from '../src/db/sql/queue/claim.js';
import { BENCH_DAEMON, buildBigDatabase, JIT_OFF_URL, MODELS } from './support/big-database-build.js';
import { alternate, median } from './support/processes.js';

type Design = 'heap' | 'partitioned';

const CLAIMS = 200;
const CLAIM_LOOP_TAG = '/* partitioning-bench claim loop */';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? Number.NaN;
};

interface Run {
  design: Design;
  buildSeconds: number;
  partitions: number;
  claim: number[];
  complete: number[];
  /** Median shared buffers touched by one claim, and by the completion of its rows. */
  claimBuffers: number;
  completeBuffers: number;
  removeSeconds: number;
  removeWalBytes: number;
  /** The whole server's WAL meanwhile (other sessions' included: an upper bound). */
  serverWalBytes: number;
  statementsKept: boolean;
  /** The statements removing the requests alone (pg_stat_statements). */
  requestsSeconds: number;
  requestsWalBytes: number;
  removedRequests: number;
  claimsWhileRemoving: number[];
}

/** Turns `requests` into a table partitioned by day of created_at, keeping its rows, indexes, key and trigger. */
async function partitionRequests(client: pg.PoolClient, s: string): Promise<number> {
  const q = (sql: string) => client.query(sql);
  const { rows: indexes } = await q(
    `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisprimary AS primary
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = '${s}.requests'::regclass`,
  );
  const { rows: triggers } = await q(
    `SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE tgrelid = '${s}.requests'::regclass AND NOT tgisinternal`,
  );
  const { rows: foreign } = await q(
    `SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
      WHERE conrelid = '${s}.requests'::regclass AND contype = 'f'`,
  );
  const { rows: views } = await q(
    `SELECT DISTINCT v.relname AS name, pg_get_viewdef(v.oid) AS def
       FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
      WHERE d.refobjid = '${s}.requests'::regclass AND v.relkind = 'v'`,
  );
  await q(`ALTER TABLE ${s}.requests RENAME TO requests_heap`);
  for (const ix of indexes) {
    await q(`ALTER INDEX ${s}.${ix.name} RENAME TO ${ix.name}_heap`);
  }
  await q(
    `CREATE TABLE ${s}.requests (LIKE ${s}.requests_heap INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
       PARTITION BY RANGE (created_at)`,
  );
  const { rows: days } = await q(
    `SELECT d AS "from", d + interval '1 day' AS "to", to_char(d, 'YYYYMMDD') AS tag
       FROM generate_series(date_trunc('day', (SELECT min(created_at) FROM ${s}.requests_heap)),
                            date_trunc('day', now() + interval '1 day'), interval '1 day') d`,
  );
  for (const d of days) {
    await client.query(
      `CREATE TABLE ${s}.requests_${d.tag} PARTITION OF ${s}.requests FOR VALUES FROM ('${d.from.toISOString()}') TO ('${d.to.toISOString()}')`,
    );
  }
  await q(`INSERT INTO ${s}.requests SELECT * FROM ${s}.requests_heap`);
  await q(`DROP TABLE ${s}.requests_heap CASCADE`);
  for (const v of views) await q(`CREATE VIEW ${s}.${v.name} AS ${v.def}`);
  for (const ix of indexes) {
    if (ix.primary) {
      await q(`ALTER TABLE ${s}.requests ADD PRIMARY KEY (id, created_at)`);
    } else if (/^CREATE UNIQUE INDEX/.test(ix.def)) {
      // A unique index of a partitioned table must hold the partition key.
      await q((ix.def as string).replace(/USING btree \(([^)]*)\)/, 'USING btree ($1, created_at)'));
    } else {
      await q(ix.def);
    }
  }
  for (const t of triggers) await q(t.def);
  for (const f of foreign) await q(`ALTER TABLE ${s}.requests ADD CONSTRAINT ${f.conname} ${f.def}`);
  await q(`VACUUM ANALYZE ${s}.requests`);
  return days.length;
}

/** The claim's parameters: the ten models, want `want` each, the backlog's route. */
function claimValues(routeId: number, want: number): unknown[] {
  const models = Array.from({ length: MODELS }, (_, m) => `model-${m}`);
  return [
    models,
    models.map(() => want),
    models.map(() => 0),
    BENCH_DAEMON,
    600_000,
    models.map(() => `{${routeId}}`),
  ];
}

const COMPLETE = (s: string) =>
  `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200, response_body = '{}',
          daemon_id = NULL, lease_expires_at = NULL WHERE id = ANY($1::uuid[])`;

/** Shared buffers a statement touched (hit or read), from EXPLAIN (ANALYZE, BUFFERS): not machine-speed dependent. */
async function buffersOf(client: pg.PoolClient, text: string, values: unknown[]): Promise<number> {
  const { rows } = await client.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values);
  const plan = rows[0]['QUERY PLAN'][0].Plan;
  return plan['Shared Hit Blocks'] + plan['Shared Read Blocks'];
}

/**
 * CLAIMS claims of up to 10 rows per model, each completed after; both timed. Then 20 more of each
 * under EXPLAIN (ANALYZE, BUFFERS), counting the buffers they touch (the cost of probing every
 * partition shows there whatever the machine's load).
 */
async function hotPath(pool: pg.Pool, s: string, routeId: number) {
  const client = await pool.connect();
  const claim: number[] = [];
  const complete: number[] = [];
  const claimBuffers: number[] = [];
  const completeBuffers: number[] = [];
  try {
    const values = claimValues(routeId, 10);
    for (let i = 0; i < CLAIMS + 10; i++) {
      const t0 = performance.now();
      const { rows } = await client.query({ name: 'part_claim', text: claimSql(s), values });
      const t1 = performance.now();
      await client.query({ name: 'part_complete', text: COMPLETE(s), values: [rows.map((r) => r.id)] });
      if (i >= 10) {
        claim.push(t1 - t0);
        complete.push(performance.now() - t1);
      }
    }
    for (let i = 0; i < 20; i++) {
      claimBuffers.push(await buffersOf(client, claimSql(s), values));
      // The rows the explained claim took are the ones it marked processing by the bench daemon.
      const { rows } = await client.query(
        `SELECT array_agg(id) AS ids FROM ${s}.requests WHERE state = 'processing' AND daemon_id = $1 AND batch_id IN (SELECT id FROM ${s}.batches WHERE finished_at IS NULL) AND line_number > 64`,
        [BENCH_DAEMON],
      );
      completeBuffers.push(await buffersOf(client, COMPLETE(s), [rows[0].ids ?? []]));
    }
  } finally {
    client.release();
  }
  return { claim, complete, claimBuffers: median(claimBuffers), completeBuffers: median(completeBuffers) };
}

/** Claims one row per model every 20 ms until stopped; returns each claim's time. */
function claimLoop(pool: pg.Pool, s: string, routeId: number) {
  let stop = false;
  const times: number[] = [];
  const done = (async () => {
    const client = await pool.connect();
    try {
      const values = claimValues(routeId, 1);
      while (!stop) {
        const t0 = performance.now();
        const { rows } = await client.query({
          name: 'part_loop_claim',
          text: `${CLAIM_LOOP_TAG} ${claimSql(s)}`,
          values,
        });
        times.push(performance.now() - t0);
        await client.query({
          name: 'part_loop_complete',
          text: `${CLAIM_LOOP_TAG} ${COMPLETE(s)}`,
          values: [rows.map((r) => r.id)],
        });
        await new Promise((r) => setTimeout(r, 20));
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

interface StatementTotals {
  /** WAL of all this schema's statements but the claim loop's. */
  wal: number;
  /** WAL and execution time of the statements removing requests: the purge's chunk DELETEs, or DETACH and DROP. */
  requestsWal: number;
  requestsMs: number;
  /** The server's WAL position, and pg_stat_statements' evictions and last reset (a change spoils the figures). */
  lsn: string;
  churn: string;
}

/** This schema's statements' totals so far, from pg_stat_statements (other sessions' are not counted). */
async function statementTotals(pool: pg.Pool, s: string): Promise<StatementTotals> {
  const { rows } = await pool.query(
    `WITH mine AS (
       SELECT query, wal_bytes, total_exec_time FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query LIKE '%' || $1 || '%' AND query NOT LIKE $2),
     requests AS (
       SELECT * FROM mine WHERE query ~ ('DELETE FROM "?' || $1 || '"?\\.requests\\s') OR query ~ 'DETACH PARTITION'
          OR query ~ ('DROP TABLE "?' || $1 || '"?\\.requests_'))
     SELECT (SELECT coalesce(sum(wal_bytes), 0) FROM mine)::float8 AS wal,
            (SELECT coalesce(sum(wal_bytes), 0) FROM requests)::float8 AS requests_wal,
            (SELECT coalesce(sum(total_exec_time), 0) FROM requests)::float8 AS requests_ms,
            pg_current_wal_lsn()::text AS lsn,
            (SELECT dealloc || ' ' || stats_reset FROM pg_stat_statements_info) AS churn`,
    [s, `${CLAIM_LOOP_TAG}%`],
  );
  const r = rows[0];
  return { wal: r.wal, requestsWal: r.requests_wal, requestsMs: r.requests_ms, lsn: r.lsn, churn: r.churn };
}

async function oneRun(
  design: Design,
  options: { finished: number; pending: number; bodyBytes: number },
): Promise<Run> {
  const s = `part_${design === 'heap' ? 'h' : 'p'}_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: JIT_OFF_URL, max: 4 });
  try {
    await migrate(pool, { schema: s });
    const t0 = performance.now();
    const big = await buildBigDatabase(pool, s, { ...options, perBatch: 10_000 });
    let partitions = 1;
    if (design === 'partitioned') {
      const client = await pool.connect();
      try {
        await client.query(`SET maintenance_work_mem = '512MB'`);
        partitions = await partitionRequests(client, s);
      } finally {
        client.release();
      }
    }
    const buildSeconds = (performance.now() - t0) / 1000;
    const { claim, complete, claimBuffers, completeBuffers } = await hotPath(pool, s, big.routeId);

    // The oldest half: batches created before the day boundary at the median ended batch's creation.
    const { rows: cut } = await pool.query(
      `SELECT date_trunc('day', percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at)) AS at
         FROM ${s}.batches WHERE finished_at IS NOT NULL`,
    );
    const cutoff: Date = cut[0].at;
    const { rows: marked } = await pool.query(
      `WITH old AS (SELECT id, file_id FROM ${s}.batches WHERE created_at < $1 AND finished_at IS NOT NULL),
            files AS (UPDATE ${s}.files f SET deleted_at = now() FROM old WHERE f.id = old.file_id)
       UPDATE ${s}.batches b SET deleted_at = now() FROM old WHERE b.id = old.id RETURNING b.total_requests`,
      [cutoff],
    );
    const removedRequests = marked.reduce((n, r) => n + Number(r.total_requests), 0);
    const { rows: doomed } = await pool.query(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '${s}.requests'::regclass
          AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= $1`,
      [cutoff],
    );

    const before = await statementTotals(pool, s);
    const loop = claimLoop(pool, s, big.routeId);
    const r0 = performance.now();
    if (design === 'partitioned') {
      for (const p of doomed) {
        // CONCURRENTLY cannot run in a transaction block: each is its own statement on the pool.
        await pool.query(`ALTER TABLE ${s}.requests DETACH PARTITION ${s}.${p.name} CONCURRENTLY`);
        await pool.query(`DROP TABLE ${s}.${p.name}`);
      }
    }
    const report = await purge(pool, s);
    const removeSeconds = (performance.now() - r0) / 1000;
    const claimsWhileRemoving = await loop.stop();
    const after = await statementTotals(pool, s);
    const removeWalBytes = after.wal - before.wal;
    const { rows: lsn } = await pool.query('SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8 AS b', [
      after.lsn,
      before.lsn,
    ]);
    const serverWalBytes = lsn[0].b as number;
    // Evicted or reset entries of pg_stat_statements (other sessions' statements fill it too) would undercount.
    const statementsKept = after.churn === before.churn;
    const requestsWalBytes = after.requestsWal - before.requestsWal;
    const requestsSeconds = (after.requestsMs - before.requestsMs) / 1000;
    const left = await pool.query(
      `SELECT count(*)::int AS n FROM ${s}.requests WHERE batch_id IN (SELECT id FROM ${s}.batches WHERE created_at < $1)`,
      [cutoff],
    );
    if (left.rows[0].n !== 0 || (design === 'heap' && report.requests !== removedRequests)) {
      throw new Error(
        `${design}: ${left.rows[0].n} requests of removed batches left, purge reported ${report.requests} of ${removedRequests}`,
      );
    }
    return {
      design,
      buildSeconds,
      partitions,
      claim,
      complete,
      claimBuffers,
      completeBuffers,
      removeSeconds,
      removeWalBytes,
      serverWalBytes,
      statementsKept,
      requestsSeconds,
      requestsWalBytes,
      removedRequests,
      claimsWhileRemoving,
    };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`).catch(() => {});
    await pool.end();
  }
}

export async function benchPartitioning(
  options: { finished?: number; pending?: number; bodyBytes?: number; rounds?: number } = {},
): Promise<{ markdown: string }> {
  const finished = options.finished ?? Number(process.env.BENCH_PART_FINISHED ?? 2_000_000);
  const pending = options.pending ?? Number(process.env.BENCH_PART_PENDING ?? 100_000);
  const bodyBytes = options.bodyBytes ?? 200;
  const rounds = options.rounds ?? Number(process.env.BENCH_PART_ROUNDS ?? 2);
  const check = new pg.Pool({ connectionString: JIT_OFF_URL, max: 1 });
  const ext = await check.query(`SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'`);
  await check.end();
  if (ext.rowCount === 0) throw new Error('needs the pg_stat_statements extension (WAL per statement)');
  const runs: Run[] = [];
  for (let i = 0; i < rounds * 2; i++) {
    const [design] = alternate<Design>(i, 'heap', 'partitioned');
    process.stderr.write(`partitioning: run ${i + 1}/${rounds * 2} (${design})…\n`);
    runs.push(await oneRun(design, { finished, pending, bodyBytes }));
  }
  const row = (d: Design) => {
    const rs = runs.filter((r) => r.design === d);
    const m = (f: (r: Run) => number) => median(rs.map(f));
    const removing = rs.flatMap((r) => r.claimsWhileRemoving);
    return `| ${d} | ${rs[0]!.partitions} | ${m((r) => pct(r.claim, 50)).toFixed(2)} / ${m((r) => pct(r.claim, 99)).toFixed(2)} | ${m((r) => pct(r.complete, 50)).toFixed(2)} / ${m((r) => pct(r.complete, 99)).toFixed(2)} | ${m((r) => r.claimBuffers).toFixed(0)} / ${m((r) => r.completeBuffers).toFixed(0)} | ${m((r) => r.removeSeconds).toFixed(1)} s (${rs.map((r) => r.removeSeconds.toFixed(1)).join(', ')}) | ${m((r) => r.requestsSeconds).toFixed(2)} s | ${(m((r) => r.removeWalBytes) / 1024 ** 2).toFixed(1)} MB${rs.every((r) => r.statementsKept) ? '' : ' (pg_stat_statements evicted or reset meanwhile: low)'} (server ${(m((r) => r.serverWalBytes) / 1024 ** 2).toFixed(0)} MB) | ${(m((r) => r.requestsWalBytes) / 1024 ** 2).toFixed(2)} MB | ${pct(removing, 50).toFixed(2)} / ${pct(removing, 99).toFixed(2)} (${removing.length}) | ${m((r) => r.buildSeconds).toFixed(0)} s |`;
  };
  const removed = median(runs.map((r) => r.removedRequests));
  return {
    markdown: [
      `### Retention: chunked purge against partitions (${finished.toLocaleString('en-US')} finished + ${pending.toLocaleString('en-US')} pending requests)`,
      '',
      `Each run builds the database afresh (bodies ~${bodyBytes} B); ${rounds} runs of each design, alternating; medians.`,
      `Removed: the ended batches created before the day boundary at their median creation time, ${removed.toLocaleString('en-US')} requests with their templates, batches and files.`,
      'Claim: one statement over the ten models, want 10 each; complete: the UPDATE by `id = ANY(…)` of its rows (p50 / p99 ms, before removing).',
      'Removal time is wall time of the whole removal; "of which requests" is the execution time and WAL (pg_stat_statements, this',
      "schema's statements, the claim loop's excluded) of the purge's chunk DELETEs of requests, or of DETACH … CONCURRENTLY and DROP.",
      'The rest is the same purge of templates, batches and files in both. Claims while removing: one row per model every 20 ms.',
      '',
      '| design | partitions | claim ms | complete ms | buffers per claim / completion | removal time (each) | of which requests | removal WAL | of which requests | claim ms while removing (n) | build |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      row('heap'),
      row('partitioned'),
    ].join('\n'),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log((await benchPartitioning()).markdown);
}
