import { liveBatchSql } from '../../../domain/batch-lifecycle.js';

/**
 * Deadlines at risk (issue 15 item 2, docs/decisions/0007): marks the live batches that would miss
 * their deadline at their current rate (batches.raised_at), so the claim raises them
 * (fair-share.ts: first among their owner's batches, the owner's weight × RAISED_WEIGHT_FACTOR), and
 * clears the mark once a batch is comfortably back on track.
 *
 *   rate       completions over the last minute (or since the batch began, if shorter; a batch
 *              younger than $1 seconds is not judged yet): requests_completed_at_idx.
 *   remaining  rows still pending or in flight: requests_batch_state_idx.
 *   at risk    remaining / rate > seconds left (no completion at all: at risk).
 *   back       remaining / rate ≤ seconds left / 2 (hysteresis: a raised batch speeds up, and
 *              clearing it as soon as it breaks even would have it flap).
 *
 * Run by every daemon's maintenance every few seconds; the writes are idempotent (two daemons
 * judging at once write the same marks). Returns the batches newly raised (`raised`) and the number
 * at risk after the run (`at_risk`).
 *
 * Cost: the counts stop at what the verdict needs. remaining ≤ total_requests (on the batch row),
 * so a batch whose recent completions reach total × span / seconds left (half that for a raised
 * one) is on track whatever its remaining count: `recent` is counted up to 2 × total × span /
 * seconds left + 2 rows (LIMIT), and `remaining` only when that bound is not met (the batch is at
 * risk or near it, where the counts are exact as before; test/db/at-risk.test.ts checks the
 * verdicts against the plain formula). A young batch asks only whether any row remains. With a
 * far deadline (`fusillade run`'s 24 h: 20k lines, a minute's span → 28 rows) the judgement reads a
 * handful of buffers. Before, each run counted both sets in full, and the planner, whose statistics
 * of a fresh batch say every row is pending, read the batch's remaining rows by sequential scan of
 * requests, twice (CTEs inlined): mid-run in the 20k × 0 ms job (200 ms mock, so the run lasts a
 * minute), 6,328–8,832 buffer hits and 200–550 ms a judgement at load 5–6, against 7 hits and
 * 0.5–1.2 ms (EXPLAIN ANALYZE, same live table, alternating). Over a whole 20k × 0 ms run: see
 * docs/decisions/pipe-profile-20k.md.
 */
export function markAtRiskSql(s: string): string {
  return `
WITH judged AS (
  SELECT b.id, b.raised_at, b.total_requests::float8 AS total,
         least(60, extract(epoch FROM now() - coalesce(b.in_progress_at, b.created_at)))::float8 AS span,
         greatest(extract(epoch FROM b.expires_at - now()), 0.001)::float8 AS seconds_left
    FROM ${s}.batches b
   WHERE ${liveBatchSql('b')} AND b.expires_at IS NOT NULL
),
counted AS MATERIALIZED (
  SELECT j.*,
         CASE WHEN j.span >= $1 THEN
           (SELECT count(*) FROM (
              SELECT FROM ${s}.requests r
               WHERE r.batch_id = j.id AND r.completed_at >= now() - interval '60 seconds'
               LIMIT ceil(least(2 * j.total * j.span / j.seconds_left, j.total) + 2)::bigint) c)::float8
         END AS recent
    FROM judged j
),
verdict AS (
  SELECT j.id, j.raised_at,
         CASE
           WHEN j.span < $1 THEN j.raised_at IS NOT NULL AND EXISTS (
             SELECT FROM ${s}.requests r
              WHERE r.batch_id = j.id AND r.state IN ('pending', 'claimed', 'processing'))
           WHEN j.total * j.span <= j.recent * j.seconds_left * CASE WHEN j.raised_at IS NULL THEN 1 ELSE 0.5 END
             THEN false
           ELSE (SELECT CASE
                          WHEN rem.n = 0 THEN false
                          WHEN j.raised_at IS NULL THEN rem.n * j.span > j.recent * j.seconds_left
                          ELSE rem.n * j.span > j.recent * j.seconds_left / 2
                        END
                   FROM (SELECT count(*)::float8 AS n FROM ${s}.requests r
                          WHERE r.batch_id = j.id AND r.state IN ('pending', 'claimed', 'processing')) rem)
         END AS at_risk
    FROM counted j
),
marked AS (
  UPDATE ${s}.batches b
     SET raised_at = CASE WHEN v.at_risk THEN now() END
    FROM verdict v
   WHERE b.id = v.id AND v.at_risk <> (v.raised_at IS NOT NULL)
  RETURNING b.id, b.raised_at IS NOT NULL AS raised
)
SELECT (SELECT count(*) FROM verdict WHERE at_risk)::int AS at_risk,
       coalesce((SELECT array_agg(id) FROM marked WHERE raised), '{}')::uuid[] AS raised`;
}
