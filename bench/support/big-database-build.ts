/**
 * Builds a year-of-traffic database for bench/big-database.ts with INSERT … SELECT generate_series,
 * straight into a fresh migrated schema: `finished` requests in ended batches of `perBatch` (each
 * with its input file, its templates, its output and error files, spread over the last 30 days and
 * over four owners, one batch in ten a message batch), and `pending` requests in live batches of
 * 5,000 over ten models, 64 of them in flight. The requests' and templates' indexes are dropped
 * during the load and rebuilt after it (as a restore would), then everything is VACUUM ANALYZEd.
 *
 * Ids are md5-derived uuids (random-looking, as gen_random_uuid's, but computable), so no mapping
 * table is needed between the statements.
 */
import type pg from 'pg';
import { TEST_DATABASE_URL } from '../../test/support/db.js';

/** The app's connections run with jit = off (src/cli/database.ts); so do the bench's. */
export const JIT_OFF_URL = `${TEST_DATABASE_URL}${TEST_DATABASE_URL.includes('?') ? '&' : '?'}options=-c%20jit%3Doff`;

export const OWNERS = ['alice', 'bob', 'carol', 'dave'];
export const MODELS = 10;
export const LIVE_PER_BATCH = 5_000;
export const IN_FLIGHT = 64;
export const BENCH_DAEMON = '00000000-0000-0000-0000-00000000b16d';

export interface BigDatabase {
  finishedBatches: number;
  liveBatches: number;
  routeId: number;
  /** ids of the batch the reads look at: alice's newest ended batch and her first live batch. */
  ended: { batchId: string; outputFileId: string; inputFileId: string; requestId: string };
  live: { batchId: string };
  /** An ended batch of alice's in the middle of her list (a deep page's cursor). */
  deepBatchId: string;
  buildSeconds: number;
  bytes: { requests: number; templates: number; total: number };
}

const uuid = (tag: string) => `md5(${tag})::uuid`;

export async function buildBigDatabase(
  pool: pg.Pool,
  s: string,
  options: { finished: number; pending: number; perBatch: number; bodyBytes: number },
): Promise<BigDatabase> {
  const t0 = performance.now();
  const nf = Math.max(1, Math.ceil(options.finished / options.perBatch));
  const per = options.perBatch;
  const nl = Math.max(1, Math.ceil(options.pending / LIVE_PER_BATCH));
  const client = await pool.connect();
  const q = (sql: string, values: unknown[] = []) => client.query(sql, values);
  try {
    await q(`SET maintenance_work_mem = '512MB'`);
    await q(`SET work_mem = '64MB'`);
    const route = await q(
      `INSERT INTO ${s}.upstream_routes (upstream, credential) VALUES ('http://127.0.0.1:9', 'none') RETURNING id`,
    );
    const routeId: number = route.rows[0].id;

    // The load runs without the indexes of the two big tables; they are rebuilt afterwards.
    const { rows: indexes } = await q(
      `SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def,
              c.conname, i.indrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS condef
         FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
        WHERE i.indrelid IN ('${s}.requests'::regclass, '${s}.request_templates'::regclass)`,
    );
    for (const ix of indexes) {
      await q(ix.conname ? `ALTER TABLE ${ix.tbl} DROP CONSTRAINT ${ix.conname}` : `DROP INDEX ${ix.name}`);
    }

    // Ended batches b = 1..nf (oldest first), live batches b = nf+1..nf+nl. Owner: b % 4.
    const owner = (b: string) => `(ARRAY['${OWNERS.join("','")}'])[(${b}) % ${OWNERS.length} + 1]`;
    const age = (b: string) => `now() - interval '30 days' * (1 - (${b})::float8 / ${nf + nl + 1})`;
    const pad = (n: number) => `repeat('x', ${Math.max(0, n)})`;
    await q(
      `INSERT INTO ${s}.files (id, name, purpose, size_bytes, template_count, owner, created_at, expires_at)
       SELECT ${uuid(`'in' || b`)}, 'input-' || b || '.jsonl', 'batch', ${per * options.bodyBytes}, CASE WHEN b <= ${nf} THEN ${per} ELSE ${LIVE_PER_BATCH} END,
              ${owner('b')}, ${age('b')}, ${age('b')} + interval '30 days'
         FROM generate_series(1, ${nf + nl}) b`,
    );
    await q(
      `INSERT INTO ${s}.files (id, name, purpose, size_bytes, owner, source_batch_id, created_at)
       SELECT ${uuid(`k || b`)}, 'batch_' || b || '_' || k || '.jsonl', CASE k WHEN 'out' THEN 'batch_output' ELSE 'batch_error' END,
              0, ${owner('b')}, ${uuid(`'b' || b`)}, ${age('b')} + interval '1 hour'
         FROM generate_series(1, ${nf}) b CROSS JOIN unnest(ARRAY['out', 'err']) k`,
    );
    const failed = Math.floor(per / 100);
    await q(
      `INSERT INTO ${s}.batches (id, file_id, owner, endpoint, completion_window, total_requests, created_at,
              in_progress_at, expires_at, finalizing_at, completed_at, finished_at, completed_count, failed_count,
              canceled_count, input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens,
              output_file_id, error_file_id, metadata)
       SELECT ${uuid(`'b' || b`)}, ${uuid(`'in' || b`)}, ${owner('b')},
              CASE WHEN b % 10 = 0 THEN '/v1/messages' ELSE '/v1/chat/completions' END, '24h', ${per},
              ${age('b')}, ${age('b')}, ${age('b')} + interval '24 hours', ${age('b')} + interval '1 hour',
              ${age('b')} + interval '1 hour', ${age('b')} + interval '1 hour', ${per - failed}, ${failed}, 0,
              ${per * 250}, 0, ${per * 350}, 0, ${per * 600}, ${uuid(`'out' || b`)}, ${uuid(`'err' || b`)},
              jsonb_build_object('job', 'nightly-' || b)
         FROM generate_series(1, ${nf}) b`,
    );
    await q(
      `INSERT INTO ${s}.batches (id, file_id, owner, endpoint, completion_window, total_requests, created_at,
              in_progress_at, expires_at)
       SELECT ${uuid(`'b' || b`)}, ${uuid(`'in' || b`)}, ${owner('b')}, '/v1/chat/completions', '24h', ${LIVE_PER_BATCH},
              now() - interval '1 minute' * (${nf + nl + 1} - b), now(), now() + interval '24 hours' + b * interval '1 second'
         FROM generate_series(${nf + 1}, ${nf + nl}) b`,
    );
    // One model per ended batch; the live ones mix all ten.
    await q(
      `INSERT INTO ${s}.batch_models (batch_id, model, input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens)
       SELECT ${uuid(`'b' || b`)}, 'model-' || b % ${MODELS}, ${per * 250}, 0, ${per * 350}, 0, ${per * 600}
         FROM generate_series(1, ${nf}) b`,
    );
    await q(
      `INSERT INTO ${s}.batch_models (batch_id, model)
       SELECT ${uuid(`'b' || b`)}, 'model-' || m FROM generate_series(${nf + 1}, ${nf + nl}) b, generate_series(0, ${MODELS - 1}) m`,
    );
    await q(
      `INSERT INTO ${s}.batch_routes (batch_id, model, route_id)
       SELECT batch_id, model, $1 FROM ${s}.batch_models`,
      [routeId],
    );

    // Templates and requests, one ended batch per statement group of 100 (a statement per 1M rows).
    const body = `'{"model":"model-' || (b % ${MODELS}) || '","messages":[{"role":"user","content":"' || ${pad(options.bodyBytes - 70)} || l || '"}]}'`;
    const answer = `'{"id":"chatcmpl-' || l || '","choices":[{"message":{"role":"assistant","content":"' || ${pad(options.bodyBytes - 80)} || '"}}]}'`;
    const step = Math.max(1, Math.floor(1_000_000 / per));
    for (let from = 1; from <= nf; from += step) {
      const to = Math.min(nf, from + step - 1);
      await q(
        `INSERT INTO ${s}.request_templates (id, file_id, line_number, custom_id, endpoint, method, path, body, model)
         SELECT ${uuid(`'t' || b || ':' || l`)}, ${uuid(`'in' || b`)}, l, 'req-' || l, 'http://127.0.0.1:9', 'POST',
                '/v1/chat/completions', ${body}, 'model-' || b % ${MODELS}
           FROM generate_series(${from}, ${to}) b, generate_series(1, ${per}) l`,
      );
      await q(
        `INSERT INTO ${s}.requests (id, batch_id, template_id, line_number, model, state, attempt, started_at,
                completed_at, response_status, response_body, upstream_request_id, input_tokens, cached_tokens,
                output_tokens, reasoning_tokens, total_tokens, created_at, route_id)
         SELECT ${uuid(`'r' || b || ':' || l`)}, ${uuid(`'b' || b`)}, ${uuid(`'t' || b || ':' || l`)}, l, 'model-' || b % ${MODELS},
                CASE WHEN l % 100 = 0 THEN 'failed' ELSE 'completed' END, 1,
                ${age('b')} + (l::float8 / ${per}) * interval '50 minutes',
                ${age('b')} + (l::float8 / ${per}) * interval '50 minutes' + interval '2 seconds',
                CASE WHEN l % 100 = 0 THEN 500 ELSE 200 END,
                CASE WHEN l % 100 = 0 THEN '{"error":{"message":"upstream failed","type":"server_error"}}' ELSE ${answer} END,
                'req_' || l, 250, 0, 350, 0, 600, ${age('b')}, ${routeId}
           FROM generate_series(${from}, ${to}) b, generate_series(1, ${per}) l`,
      );
    }
    await q(
      `INSERT INTO ${s}.request_templates (id, file_id, line_number, custom_id, endpoint, method, path, body, model)
       SELECT ${uuid(`'t' || b || ':' || l`)}, ${uuid(`'in' || b`)}, l, 'req-' || l, 'http://127.0.0.1:9', 'POST',
              '/v1/chat/completions', ${body.replace(`(b % ${MODELS})`, `(l % ${MODELS})`)}, 'model-' || l % ${MODELS}
         FROM generate_series(${nf + 1}, ${nf + nl}) b, generate_series(1, ${LIVE_PER_BATCH}) l`,
    );
    await q(
      `INSERT INTO ${s}.requests (id, batch_id, template_id, line_number, model, created_at, route_id)
       SELECT ${uuid(`'r' || b || ':' || l`)}, ${uuid(`'b' || b`)}, ${uuid(`'t' || b || ':' || l`)}, l, 'model-' || l % ${MODELS},
              now(), ${routeId}
         FROM generate_series(${nf + 1}, ${nf + nl}) b, generate_series(1, ${LIVE_PER_BATCH}) l`,
    );
    await q(`INSERT INTO ${s}.daemons (id, host, pid) VALUES ($1, 'bench', 0)`, [BENCH_DAEMON]);
    // A daemon's window of requests in flight in the first live batch.
    await q(
      `UPDATE ${s}.requests SET state = 'processing', daemon_id = $1, claimed_at = now(), started_at = now(),
              lease_expires_at = now() + interval '10 minutes', attempt = 1
        WHERE batch_id = ${uuid(`'b' || ${nf + 1}`)} AND line_number <= ${IN_FLIGHT}`,
      [BENCH_DAEMON],
    );
    await q(
      `INSERT INTO ${s}.model_limits (model, concurrency) SELECT 'model-' || m, 1000 FROM generate_series(0, ${MODELS - 1}) m`,
    );
    await q(
      `INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted)
       SELECT 'model-' || m, $1, 1000, 1000 FROM generate_series(0, ${MODELS - 1}) m`,
      [BENCH_DAEMON],
    );
    for (const ix of indexes) {
      await q(ix.conname ? `ALTER TABLE ${ix.tbl} ADD CONSTRAINT ${ix.conname} ${ix.condef}` : ix.def);
    }
    for (const t of ['requests', 'request_templates', 'batches', 'files', 'batch_models', 'batch_routes']) {
      await q(`VACUUM ANALYZE ${s}.${t}`);
    }
    const ids = await q(
      `SELECT (SELECT id FROM ${s}.batches WHERE owner = 'alice' AND finished_at IS NOT NULL
                ORDER BY created_at DESC LIMIT 1) AS ended,
              (SELECT id FROM ${s}.batches WHERE owner = 'alice' AND finished_at IS NOT NULL
                ORDER BY created_at DESC OFFSET ${Math.floor(nf / OWNERS.length / 2)} LIMIT 1) AS deep,
              (SELECT id FROM ${s}.batches WHERE finished_at IS NULL ORDER BY created_at LIMIT 1) AS live`,
    );
    const ended = await q(
      `SELECT b.id, b.output_file_id, b.file_id, (SELECT r.id FROM ${s}.requests r WHERE r.batch_id = b.id AND r.line_number = 100) AS request
         FROM ${s}.batches b WHERE b.id = $1`,
      [ids.rows[0].ended],
    );
    const sizes = await q(
      `SELECT pg_total_relation_size('${s}.requests') AS r, pg_total_relation_size('${s}.request_templates') AS t,
              (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relnamespace = '${s}'::regnamespace AND c.relkind = 'r') AS all`,
    );
    return {
      finishedBatches: nf,
      liveBatches: nl,
      routeId,
      ended: {
        batchId: ended.rows[0].id,
        outputFileId: ended.rows[0].output_file_id,
        inputFileId: ended.rows[0].file_id,
        requestId: ended.rows[0].request,
      },
      live: { batchId: ids.rows[0].live },
      deepBatchId: ids.rows[0].deep,
      buildSeconds: (performance.now() - t0) / 1000,
      bytes: {
        requests: Number(sizes.rows[0].r),
        templates: Number(sizes.rows[0].t),
        total: Number(sizes.rows[0].all),
      },
    };
  } finally {
    client.release();
  }
}
