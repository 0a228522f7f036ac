/**
 * Bench (4): claim latency with 1,000,000 pending requests over 50 models and 500 batches of 50
 * owners, 20 rows of each model in flight at another daemon (goal: p99 under 20 ms). The data is built with INSERT … SELECT generate_series straight into a fresh schema;
 * then the daemon's claim (one autocommit statement over all models, capped by the daemon's slot
 * budgets, src/db/sql/queue/claim.ts) runs repeatedly, each claimed row being completed afterwards
 * (untimed) so the in-flight set stays small.
 * Standalone: `node --import tsx bench/claim-latency.ts [pending]`.
 */

import { claimSql, claimUpdate } from '../src/db/sql/queue/claim.js';
import { liveBatchSql } from '../src/domain/batch-lifecycle.js';
import { createTestDb } from '../test/support/db.js';

const DAEMON = '00000000-0000-0000-0000-00000000bead';

/**
 * Baseline, measured in the same run: the claim before slot budgets (git history of
 * src/db/sql/queue/claim.ts), run inside BEGIN + SELECT … FOR UPDATE of the model_limits rows + COMMIT,
 * capping each model by its global limit minus its in-flight rows (counted through
 * requests_inflight_idx). $1 models, $2 wants, $3 daemon, $4 lease ms, $5 routes per model (the
 * routes came later; the baseline takes them too, so both walk the same index).
 */
function previousClaimSql(s: string): string {
  return `
WITH want AS MATERIALIZED (
  SELECT w.model,
         least(w.want, ml.concurrency - (SELECT count(*) FROM ${s}.requests f
                                          WHERE f.model = w.model AND f.state IN ('claimed', 'processing')))::int AS cap,
         w.routes::int[] AS routes
    FROM unnest($1::text[], $2::int[], $5::text[]) AS w(model, want, routes)
    JOIN ${s}.model_limits ml ON ml.model = w.model
),
${deadlineOrderPickedCtes(s)}
${claimUpdate(s, { daemon: '$3', lease: '$4' })}`;
}

/**
 * Baseline, measured in the same run: the claim before routes were recorded (issue 18; git history of
 * src/db/sql/queue/claim.ts): the same budget-capped statement, taking any pending row of the model
 * through requests_pending_idx (batch_id, model, line_number), which the bench creates for it.
 * $1 models, $2 wants, $3 held, $4 daemon, $5 lease ms.
 */
function routelessClaimSql(s: string): string {
  return `
WITH want AS MATERIALIZED (
  SELECT w.model, least(w.want, b.slots - w.held)::int AS cap
    FROM unnest($1::text[], $2::int[], $3::int[]) AS w(model, want, held)
    JOIN ${s}.model_budgets b ON b.model = w.model AND b.daemon_id = $4
     FOR KEY SHARE OF b
),
live AS MATERIALIZED (
  SELECT b.id, b.file_id, b.expires_at FROM ${s}.batches b WHERE ${liveBatchSql('b')} ORDER BY b.expires_at, b.created_at, b.id
),
picked AS (
  SELECT p.id, p.row_ctid, p.template_id, p.file_id, p.line_number, p.expires_at
    FROM want w
    CROSS JOIN LATERAL (
      SELECT r.id, r.row_ctid, r.template_id, lb.file_id, r.line_number, lb.expires_at
        FROM live lb
        CROSS JOIN LATERAL (
          SELECT r.id, r.ctid AS row_ctid, r.template_id, r.line_number FROM ${s}.requests r
           WHERE r.batch_id = lb.id AND r.model = w.model AND r.state = 'pending'
             AND (r.not_before IS NULL OR r.not_before <= now())
           ORDER BY r.line_number
           LIMIT greatest(w.cap, 0)
             FOR UPDATE OF r SKIP LOCKED) r
       LIMIT greatest(w.cap, 0)) p
   WHERE w.cap > 0
)
${claimUpdate(s, { daemon: '$4', lease: '$5' })}`;
}

/** The claim's live batches and picked rows before fair share: deadline order alone. */
function deadlineOrderPickedCtes(s: string): string {
  return `live AS MATERIALIZED (
  SELECT b.id, b.file_id, b.expires_at FROM ${s}.batches b WHERE ${liveBatchSql('b')} ORDER BY b.expires_at, b.created_at, b.id
),
picked AS (
  SELECT p.id, p.row_ctid, p.template_id, p.file_id, p.line_number, p.expires_at
    FROM want w
    CROSS JOIN LATERAL (
      SELECT r.id, r.row_ctid, r.template_id, lb.file_id, r.line_number, lb.expires_at
        FROM live lb
        CROSS JOIN LATERAL unnest(w.routes) AS rt(route_id)
        CROSS JOIN LATERAL (
          SELECT r.id, r.ctid AS row_ctid, r.template_id, r.line_number FROM ${s}.requests r
           WHERE r.batch_id = lb.id AND r.model = w.model AND r.route_id = rt.route_id AND r.state = 'pending'
             AND (r.not_before IS NULL OR r.not_before <= now())
           ORDER BY r.prefix_hash, r.line_number
           LIMIT greatest(w.cap, 0)
             FOR UPDATE OF r SKIP LOCKED) r
       LIMIT greatest(w.cap, 0)) p
   WHERE w.cap > 0
)`;
}

/**
 * Baseline, measured in the same run: the claim before fair share between owners (issue 15; git
 * history of src/db/sql/queue/claim.ts): the same budget-capped statement walking live batches in deadline
 * order alone, blind to owners and to what is in flight. $1 models, $2 wants, $3 held, $4 daemon,
 * $5 lease ms, $6 routes per model.
 */
function deadlineOrderClaimSql(s: string): string {
  return `
WITH want AS MATERIALIZED (
  SELECT w.model, least(w.want, b.slots - w.held)::int AS cap, w.routes::int[] AS routes
    FROM unnest($1::text[], $2::int[], $3::int[], $6::text[]) AS w(model, want, held, routes)
    JOIN ${s}.model_budgets b ON b.model = w.model AND b.daemon_id = $4
     FOR KEY SHARE OF b
),
${deadlineOrderPickedCtes(s)}
${claimUpdate(s, { daemon: '$4', lease: '$5' })}`;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

export async function benchClaimLatency(
  options: {
    pending?: number;
    claims?: number;
    want?: number;
    models?: number;
    batches?: number;
    owners?: number;
  } = {},
) {
  const batches = options.batches ?? 500;
  const models = options.models ?? 50;
  const owners = options.owners ?? 50;
  const inFlightPerModel = 20;
  const pending = options.pending ?? 1_000_000;
  const perBatch = Math.floor(pending / batches);
  const claims = options.claims ?? 300;
  const want = options.want ?? 2;
  const db = await createTestDb({ max: 2 });
  const s = `"${db.schema}"`;
  try {
    const buildStart = performance.now();
    const { rows: files } = await db.pool.query(
      `INSERT INTO ${s}.files (name, template_count) VALUES ('bench', ${models}) RETURNING id`,
    );
    const fileId = files[0].id;
    await db.pool.query(
      `INSERT INTO ${s}.request_templates (file_id, line_number, custom_id, endpoint, method, path, body, model)
       SELECT $1, g, 'c' || g, 'http://127.0.0.1:9', 'POST', '/v1/chat/completions', '{}', 'model-' || (g - 1)
         FROM generate_series(1, ${models}) g`,
      [fileId],
    );
    await db.pool.query(
      `INSERT INTO ${s}.batches (file_id, owner, total_requests, in_progress_at, expires_at, created_at)
       SELECT $1, 'owner-' || (g % ${owners}), ${perBatch}, now(), now() + interval '24 hours' + g * interval '1 second', now() + g * interval '1 ms'
         FROM generate_series(1, ${batches}) g`,
      [fileId],
    );
    // Every request on one route (as a server with one upstream records them).
    const { rows: routes } = await db.pool.query(
      `INSERT INTO ${s}.upstream_routes (upstream, credential) VALUES ('http://127.0.0.1:9', 'none') RETURNING id`,
    );
    const routeId: number = routes[0].id;
    await db.pool.query(
      `INSERT INTO ${s}.requests (batch_id, template_id, line_number, model, route_id)
       SELECT b.id, t.id, g, t.model, ${routeId}
         FROM ${s}.batches b CROSS JOIN generate_series(1, ${perBatch}) g
         JOIN ${s}.request_templates t ON t.file_id = $1 AND t.line_number = ((g - 1) % ${models}) + 1`,
      [fileId],
    );
    await db.pool.query(
      `INSERT INTO ${s}.batch_models (batch_id, model)
       SELECT b.id, 'model-' || m FROM ${s}.batches b CROSS JOIN generate_series(0, ${models - 1}) m`,
    );
    await db.pool.query(
      `INSERT INTO ${s}.batch_routes (batch_id, model, route_id)
       SELECT b.id, 'model-' || m, ${routeId} FROM ${s}.batches b CROSS JOIN generate_series(0, ${models - 1}) m`,
    );
    await db.pool.query(
      `INSERT INTO ${s}.model_limits (model, concurrency) SELECT 'model-' || m, 1000 FROM generate_series(0, ${models - 1}) m`,
    );
    await db.pool.query(`INSERT INTO ${s}.daemons (id, host, pid) VALUES ($1, 'bench', 0)`, [DAEMON]);
    // The daemon's budgets (what a rebalance would grant it alone): the whole limit of every model.
    await db.pool.query(
      `INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted)
       SELECT 'model-' || m, $1, 1000, 1000 FROM generate_series(0, ${models - 1}) m`,
      [DAEMON],
    );
    // What another daemon has in flight: the last lines of each model in the last batches (no claim
    // here takes them), spread over the owners; every fair claim counts them per owner.
    await db.pool.query(
      `UPDATE ${s}.requests r SET state = 'processing', daemon_id = '00000000-0000-0000-0000-0000000000aa',
              claimed_at = now(), started_at = now(), lease_expires_at = now() + interval '1 hour', attempt = 1
        WHERE r.id IN (SELECT r2.id FROM ${s}.requests r2
                        WHERE r2.line_number > ${perBatch} - ${models}
                          AND r2.batch_id IN (SELECT id FROM ${s}.batches ORDER BY expires_at DESC LIMIT ${inFlightPerModel}))`,
    );
    // The routeless baseline's index (migration 0010 replaced it with requests_pending_route_idx).
    await db.pool.query(
      `CREATE INDEX requests_pending_idx ON ${s}.requests (batch_id, model, line_number) WHERE state = 'pending'`,
    );
    await db.pool.query(`VACUUM ANALYZE ${s}.requests`);
    await db.pool.query(`ANALYZE`);
    const buildSeconds = (performance.now() - buildStart) / 1000;

    const client = await db.pool.connect();
    if (process.env.PLAN_MODE) await client.query(`SET plan_cache_mode = ${process.env.PLAN_MODE}`);
    const txn: number[] = [];
    const before: number[] = [];
    const routeless: number[] = [];
    const deadlineOrder: number[] = [];
    let claimed = 0;
    try {
      const modelNames = Array.from({ length: models }, (_, m) => `model-${m}`);
      const wants = modelNames.map(() => want);
      const held = modelNames.map(() => 0);
      const routeLists = modelNames.map(() => `{${routeId}}`);
      const lockModels = `SELECT ml.model FROM ${s}.model_limits ml WHERE ml.model = ANY ($1::text[])
                           ORDER BY ml.model FOR UPDATE OF ml`;
      const complete = (ids: string[]) =>
        client.query(
          `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200, response_body = '{}'
            WHERE id = ANY($1::uuid[])`,
          [ids],
        );
      // Interleaved, so both see the same data and the same machine load; the first ten of each
      // warm the plan cache.
      for (let i = 0; i < claims + 10; i++) {
        const t0 = performance.now();
        const { rows } = await client.query({
          name: 'bench_claim',
          text: claimSql(s),
          values: [modelNames, wants, held, DAEMON, 600_000, routeLists],
        });
        const t1 = performance.now();
        if (i >= 10) {
          txn.push(t1 - t0);
          claimed += rows.length;
        }
        await complete(rows.map((r) => r.id));

        const b0 = performance.now();
        await client.query('BEGIN');
        await client.query({ name: 'bench_lock', text: lockModels, values: [modelNames] });
        const old = await client.query({
          name: 'bench_previous_claim',
          text: previousClaimSql(s),
          values: [modelNames, wants, DAEMON, 600_000, routeLists],
        });
        await client.query('COMMIT');
        if (i >= 10) before.push(performance.now() - b0);
        await complete(old.rows.map((r) => r.id));

        const r0 = performance.now();
        const untouched = await client.query({
          name: 'bench_routeless_claim',
          text: routelessClaimSql(s),
          values: [modelNames, wants, held, DAEMON, 600_000],
        });
        if (i >= 10) routeless.push(performance.now() - r0);
        await complete(untouched.rows.map((r) => r.id));

        const d0 = performance.now();
        const unfair = await client.query({
          name: 'bench_deadline_order_claim',
          text: deadlineOrderClaimSql(s),
          values: [modelNames, wants, held, DAEMON, 600_000, routeLists],
        });
        if (i >= 10) deadlineOrder.push(performance.now() - d0);
        await complete(unfair.rows.map((r) => r.id));
      }
      if (process.env.EXPLAIN) {
        const names = Array.from({ length: models }, (_, m) => `'model-${m}'`).join(',');
        const ex = await client.query(
          `EXPLAIN (ANALYZE, BUFFERS) ${claimSql(s)
            .replace('$1::text[]', `ARRAY[${names}]`)
            .replace('$2::int[]', `array_fill(${want}, ARRAY[${models}])`)
            .replace('$3::int[]', `array_fill(0, ARRAY[${models}])`)
            .replace('$6::text[]', `array_fill('{${routeId}}'::text, ARRAY[${models}])`)
            .replaceAll('$4', `'${DAEMON}'::uuid`)
            .replace('$5', '600000')}`,
        );
        console.log(ex.rows.map((r) => r['QUERY PLAN']).join('\n'));
      }
    } finally {
      client.release();
    }
    txn.sort((a, b) => a - b);
    before.sort((a, b) => a - b);
    routeless.sort((a, b) => a - b);
    deadlineOrder.sort((a, b) => a - b);
    const p99 = pct(txn, 99);
    return {
      p50: pct(txn, 50),
      p99,
      markdown: [
        `### Claim latency (${pending.toLocaleString('en-US')} pending, ${models} models, ${batches} batches of ${owners} owners, ${models * inFlightPerModel} in flight)`,
        '',
        `Data built with INSERT … SELECT generate_series in ${buildSeconds.toFixed(1)} s. ${claims} claims over all ${models} models, want ${want} per model (${(claimed / claims).toFixed(0)} rows per claim on average).`,
        '',
        '| measure | p50 | p99 | max |',
        '|---|---|---|---|',
        `| claim: one autocommit statement capped by the daemon's budget rows, shared between owners by weight (all the daemon runs per claim) | ${pct(txn, 50).toFixed(2)} ms | ${p99.toFixed(2)} ms | ${txn[txn.length - 1]!.toFixed(2)} ms |`,
        `| baseline, same run, interleaved: the same claim before fair share (deadline order alone) | ${pct(deadlineOrder, 50).toFixed(2)} ms | ${pct(deadlineOrder, 99).toFixed(2)} ms | ${deadlineOrder[deadlineOrder.length - 1]!.toFixed(2)} ms |`,
        `| baseline, same run, interleaved: the same claim before routes were recorded (any pending row of the model) | ${pct(routeless, 50).toFixed(2)} ms | ${pct(routeless, 99).toFixed(2)} ms | ${routeless[routeless.length - 1]!.toFixed(2)} ms |`,
        `| baseline, same run, interleaved: the previous claim (BEGIN + lock model rows, claim counting global in-flight, COMMIT) | ${pct(before, 50).toFixed(2)} ms | ${pct(before, 99).toFixed(2)} ms | ${before[before.length - 1]!.toFixed(2)} ms |`,
        '',
        `Goal p99 < 20 ms: ${p99 < 20 ? 'met' : 'NOT met'}.`,
        '',
        'Reading: the statement walks live batches in deadline order per model and, in each, the routes this',
        'daemon serves that have work for the model (one here, as for a server with one upstream); the claims drain the earliest',
        "batches, so later claims probe the drained batches' pending index once per model (≈4 µs each) before",
        'finding rows. Each claim writes 100 rows of a 1M-row table whose indexes do not fit the server’s',
        'default 128 MB shared_buffers, and its commit waits for the WAL flush. The budget-capped claim needs',
        'no BEGIN, no lock of the model rows and no COMMIT round trip, and no longer counts in-flight rows.',
        'With one client, as here, the previous shape is only somewhat slower; its real cost was the model',
        'row locks serialising every daemon’s claims (the earlier p99 of 30.6 ms was measured on a loaded',
        'machine). This machine is shared (2 cores), so the tail varies from run to run.',
      ].join('\n'),
    };
  } finally {
    await db.close();
  }
}

/**
 * Standalone: `node --import tsx bench/claim-latency.ts [pending] [models batches owners want]`; e.g.
 * `… 100000 2 200 100 16` (100k pending of 100 owners, 2 models, 16 rows per model per claim).
 */
if (import.meta.url === `file://${process.argv[1]}`) {
  const [pending, models, batches, owners, want] = process.argv.slice(2).map(Number);
  console.log((await benchClaimLatency({ pending, models, batches, owners, want })).markdown);
}
