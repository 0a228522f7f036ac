/**
 * Puts a kept big database (BENCH_BIG_SCHEMA, bench/big-database.ts) back to its live state as built:
 * every request of the live batches pending again, except the first live batch's IN_FLIGHT rows,
 * which are in flight with a fresh lease, the live batches' deadlines 24 h ahead (in their build
 * order), and the bench daemon's budget rows. Each run's claims complete ~30k of the 100k pending requests (and the purge bench's claims
 * some more); without this, a later run claimed from what earlier runs left (36,706 pending rows of
 * 100,000 after a few runs) through an index full of their dead entries, and measured that instead.
 *
 * Then VACUUM (ANALYZE) requests, as production's autovacuum would after such a wave of updates
 * (autovacuum is off on the bench machines): the pending index loses the dead entries of the rows
 * reset, so each run starts from the same index and statistics.
 *
 * The reset rewrites completed rows, which the terminal guard (migration 0022) refuses: it runs with
 * session_replication_role = replica (ordinary triggers off) in its own transaction, which needs a
 * superuser, as the bench's connection is (the test database's postgres user).
 */
import type pg from 'pg';
import { BENCH_DAEMON, type BigDatabase, IN_FLIGHT, MODELS } from './big-database-build.js';

export interface ResetReport {
  /** Rows of the live batches rewritten back to their built state. */
  rows: number;
  /** Pending rows of the live batches after the reset. */
  pending: number;
  /** Ended batches still stored: each purge-under-dispatch run (big-database-purge.ts) removes ~200. */
  endedBatches: number;
  seconds: number;
}

export async function resetLiveBatches(pool: pg.Pool, s: string, big: BigDatabase): Promise<ResetReport> {
  const t0 = performance.now();
  // The live batches' ids as the build computed them (md5('b' || b)::uuid, after the ended ones).
  const live = `ARRAY(SELECT md5('b' || b)::uuid FROM generate_series(${big.finishedBatches + 1}, ${big.finishedBatches + big.liveBatches}) b)`;
  const first = `md5('b' || ${big.finishedBatches + 1})::uuid`;
  const client = await pool.connect();
  let rows = 0;
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL session_replication_role = replica');
    await client.query(
      `UPDATE ${s}.batches SET expires_at = now() + interval '24 hours' + (b - ${big.finishedBatches}) * interval '1 second'
         FROM generate_series(${big.finishedBatches + 1}, ${big.finishedBatches + big.liveBatches}) b
        WHERE id = md5('b' || b)::uuid`,
    );
    const updated = await client.query(
      `UPDATE ${s}.requests r
          SET state = CASE WHEN f.in_flight THEN 'processing' ELSE 'pending' END,
              attempt = CASE WHEN f.in_flight THEN 1 ELSE 0 END,
              daemon_id = CASE WHEN f.in_flight THEN $1::uuid END,
              claimed_at = CASE WHEN f.in_flight THEN now() END,
              started_at = CASE WHEN f.in_flight THEN now() END,
              lease_expires_at = CASE WHEN f.in_flight THEN now() + interval '10 minutes' END,
              not_before = NULL, completed_at = NULL, response_status = NULL, response_body = NULL,
              response_body_z = NULL, upstream_request_id = NULL, error_code = NULL, error_message = NULL,
              input_tokens = NULL, output_tokens = NULL, total_tokens = NULL, cached_tokens = NULL,
              reasoning_tokens = NULL
         FROM (SELECT r2.id, (r2.batch_id = ${first} AND r2.line_number <= ${IN_FLIGHT}) AS in_flight
                 FROM ${s}.requests r2 WHERE r2.batch_id = ANY (${live})) f
        WHERE r.id = f.id AND (f.in_flight OR r.state <> 'pending' OR r.attempt <> 0)`,
      [BENCH_DAEMON],
    );
    rows = updated.rowCount ?? 0;
    // The bench daemon's budgets as built: a purge run's daemon process reclaims them (the bench
    // daemon never heartbeats), and without them every claim of the next run takes nothing.
    await client.query(
      `INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted)
       SELECT 'model-' || m, $1, 1000, 1000 FROM generate_series(0, ${MODELS - 1}) m
       ON CONFLICT (model, daemon_id) DO UPDATE SET slots = 1000, wanted = 1000`,
      [BENCH_DAEMON],
    );
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
  await pool.query(`VACUUM (ANALYZE) ${s}.requests`);
  const { rows: counted } = await pool.query(
    `SELECT count(*)::int AS n FROM ${s}.requests WHERE batch_id = ANY (${live}) AND state = 'pending'`,
  );
  const { rows: ended } = await pool.query(
    `SELECT count(*)::int AS n FROM ${s}.batches WHERE finished_at IS NOT NULL AND deleted_at IS NULL`,
  );
  return { rows, pending: counted[0].n, endedBatches: ended[0].n, seconds: (performance.now() - t0) / 1000 };
}
