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
 * judging at once write the same marks). Cost: per live batch with a deadline, a count of its
 * unfinished rows and of its last minute's completions (bounded by the live backlog, not the table).
 * Returns the batches newly raised (`raised`) and the number at risk after the run (`at_risk`).
 */
export function markAtRiskSql(s: string): string {
  return `
WITH judged AS (
  SELECT b.id, b.raised_at,
         (SELECT count(*) FROM ${s}.requests r
           WHERE r.batch_id = b.id AND r.state IN ('pending', 'claimed', 'processing'))::float8 AS remaining,
         (SELECT count(*) FROM ${s}.requests r
           WHERE r.batch_id = b.id AND r.completed_at >= now() - interval '60 seconds')::float8 AS recent,
         least(60, extract(epoch FROM now() - coalesce(b.in_progress_at, b.created_at)))::float8 AS span,
         extract(epoch FROM b.expires_at - now())::float8 AS seconds_left
    FROM ${s}.batches b
   WHERE ${liveBatchSql('b')} AND b.expires_at IS NOT NULL
),
verdict AS (
  SELECT j.id, j.raised_at,
         CASE
           WHEN j.span < $1 OR j.remaining = 0 THEN j.raised_at IS NOT NULL AND j.remaining > 0
           WHEN j.raised_at IS NULL THEN j.remaining * j.span > j.recent * j.seconds_left
           ELSE j.remaining * j.span > j.recent * j.seconds_left / 2
         END AS at_risk
    FROM judged j
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
