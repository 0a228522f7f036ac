import { pastDeadlineSql } from '../../../domain/batch-lifecycle.js';

/**
 * Ends a batch whose work is over and freezes its counts on the batch row (rule 5 of docs/decisions/0003).
 *
 * A batch is over when nothing of it is in flight and either nothing is pending, or it is being
 * cancelled, or its deadline has passed (its pending rows then read as canceled, see request_view).
 * A batch without a deadline (expires_at NULL) never expires.
 * One statement: it locks the batch row, counts by state through requests_batch_state_idx, and only
 * writes when the batch is over, so callers may call it whenever they suspect a batch has ended.
 * Two callers racing serialise on the row lock and the second finds finished_at set.
 * The output and error file rows are created in the same statement (expiring output_expires_after
 * seconds from now when the batch has one), or, when the batch ends again
 * after retryFailedRequests reopened it, brought up to date (their line counts; their content is
 * always read from the requests). The API measures sizes and lines live (output-files.ts).
 *
 * The same statement writes the batch's webhook event to the outbox (webhook_deliveries, one row per
 * active endpoint of the owner subscribed to the event's type): an event exists if and only if the
 * batch ended, with no window where a crash could lose it. The event id is drawn once per ended
 * batch (a MATERIALIZED CTE) and shared by its endpoints; a batch reopened by retryFailedRequests
 * and ended again gets a new event.
 *
 * Usage (src/domain/usage.ts) is summed here too, over the completed requests, in the same grouped
 * scan as the counts: per model onto batch_models, in total onto the batch row. A request's usage is
 * written once, by the write that completes it (complete.ts: a retry's earlier attempts and a
 * cancelled attempt write none), and a batch reopened by retryFailedRequests is summed again from
 * its rows when it ends again, so the sums are exact through retries and cancels.
 *
 * Alternatives: a per-request trigger maintaining counters drifted and contended in the Rust system;
 * counting on every status read is what this avoids once a batch has ended. Usage added up by the
 * completing statement (complete.ts) into a row per batch and model would make every flush of every
 * daemon update, and so lock, the same few rows until their transactions end: flushes of one batch
 * would queue behind each other for a sum read when the batch has ended.
 *
 * Measured (bench/usage-accounting.ts: 20,000 × 0 ms at 64 in flight, answers with usage against
 * the same answers without it, alternating; a 2-core machine under other engineers' load): CPU per
 * request, daemon + its PostgreSQL backends, 440 µs with usage against 465 µs without, and 644
 * against 629 µs (+2.4 %) in an earlier run: within noise. Wall times of one side varied ×3.5
 * between runs, so no time figure is claimed from them (BENCHMARKS.md, "Usage accounting").
 */
export function finalizeBatchSql(s: string): string {
  return `
WITH b AS (
  SELECT id, owner, cancelling_at, output_expires_after, (expired_at IS NOT NULL OR ${pastDeadlineSql('')}) AS expired
    FROM ${s}.batches WHERE id = $1 AND finished_at IS NULL
     FOR UPDATE
),
m AS (
  SELECT r.model,
         count(*) FILTER (WHERE r.state = 'pending')                          AS pending,
         count(*) FILTER (WHERE r.state IN ('claimed', 'processing'))         AS in_flight,
         count(*) FILTER (WHERE r.state = 'completed')                        AS completed,
         count(*) FILTER (WHERE r.state = 'failed')                           AS failed,
         count(*) FILTER (WHERE r.state = 'canceled')                         AS canceled,
         coalesce(sum(r.input_tokens)     FILTER (WHERE r.state = 'completed'), 0) AS input_tokens,
         coalesce(sum(r.cached_tokens)    FILTER (WHERE r.state = 'completed'), 0) AS cached_tokens,
         coalesce(sum(r.output_tokens)    FILTER (WHERE r.state = 'completed'), 0) AS output_tokens,
         coalesce(sum(r.reasoning_tokens) FILTER (WHERE r.state = 'completed'), 0) AS reasoning_tokens,
         coalesce(sum(r.total_tokens)     FILTER (WHERE r.state = 'completed'), 0) AS total_tokens
    FROM ${s}.requests r WHERE r.batch_id = $1
   GROUP BY r.model
),
c AS (
  SELECT coalesce(sum(pending), 0) AS pending, coalesce(sum(in_flight), 0) AS in_flight,
         coalesce(sum(completed), 0) AS completed, coalesce(sum(failed), 0) AS failed,
         coalesce(sum(canceled), 0) AS canceled,
         coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(cached_tokens), 0) AS cached_tokens,
         coalesce(sum(output_tokens), 0) AS output_tokens,
         coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
         coalesce(sum(total_tokens), 0) AS total_tokens
    FROM m
),
ending AS (
  SELECT b.*, c.* FROM b, c
   WHERE c.in_flight = 0 AND (c.pending = 0 OR b.cancelling_at IS NOT NULL OR b.expired)
),
output_file AS (
  INSERT INTO ${s}.files (name, purpose, owner, source_batch_id, template_count, expires_at)
  SELECT 'batch_' || replace(e.id::text, '-', '') || '_output.jsonl', 'batch_output', e.owner, e.id, e.completed,
         now() + e.output_expires_after * interval '1 second'
    FROM ending e WHERE e.completed > 0
  ON CONFLICT (source_batch_id, purpose) WHERE source_batch_id IS NOT NULL
  DO UPDATE SET template_count = EXCLUDED.template_count
  RETURNING id
),
error_file AS (
  INSERT INTO ${s}.files (name, purpose, owner, source_batch_id, template_count, expires_at)
  SELECT 'batch_' || replace(e.id::text, '-', '') || '_error.jsonl', 'batch_error', e.owner, e.id,
         e.failed + e.canceled + e.pending, now() + e.output_expires_after * interval '1 second'
    FROM ending e WHERE e.failed + e.canceled + e.pending > 0
  ON CONFLICT (source_batch_id, purpose) WHERE source_batch_id IS NOT NULL
  DO UPDATE SET template_count = EXCLUDED.template_count
  RETURNING id
),
-- A file of an earlier end that has no lines now (a retry completed every failed request) says so;
-- the batch no longer points at it. Disjoint from the upserts above (those need lines).
emptied AS (
  UPDATE ${s}.files f SET template_count = 0
    FROM ending e
   WHERE f.source_batch_id = e.id
     AND ((f.purpose = 'batch_output' AND e.completed = 0)
       OR (f.purpose = 'batch_error' AND e.failed + e.canceled + e.pending = 0))
),
-- Usage per model, frozen beside the batch's totals: a finished batch's cost reads these rows.
per_model AS (
  UPDATE ${s}.batch_models bm SET
    input_tokens = m.input_tokens, cached_tokens = m.cached_tokens, output_tokens = m.output_tokens,
    reasoning_tokens = m.reasoning_tokens, total_tokens = m.total_tokens
    FROM m, ending e
   WHERE bm.batch_id = e.id AND bm.model = m.model
),
ended AS (
UPDATE ${s}.batches t SET
  finished_at     = now(),
  finalizing_at   = coalesce(t.finalizing_at, now()),
  completed_at    = CASE WHEN e.cancelling_at IS NULL AND NOT e.expired THEN now() END,
  cancelled_at    = CASE WHEN e.cancelling_at IS NOT NULL THEN now() END,
  expired_at      = CASE WHEN e.cancelling_at IS NULL AND e.expired THEN coalesce(t.expired_at, now()) END,
  completed_count = e.completed,
  failed_count    = e.failed,
  canceled_count  = e.canceled + e.pending,
  input_tokens    = e.input_tokens,
  cached_tokens   = e.cached_tokens,
  output_tokens   = e.output_tokens,
  reasoning_tokens = e.reasoning_tokens,
  total_tokens    = e.total_tokens,
  output_file_id  = CASE WHEN e.completed > 0 THEN (SELECT id FROM output_file) END,
  error_file_id   = CASE WHEN e.failed + e.canceled + e.pending > 0 THEN (SELECT id FROM error_file) END
FROM ending e
WHERE t.id = e.id
RETURNING t.id, t.owner, t.finished_at,
          CASE WHEN t.cancelled_at IS NOT NULL THEN 'batch.cancelled'
               WHEN t.expired_at IS NOT NULL THEN 'batch.expired'
               WHEN t.failed_at IS NOT NULL THEN 'batch.failed'
               ELSE 'batch.completed' END AS event_type
),
event AS MATERIALIZED (
  SELECT n.id, n.owner, n.finished_at, n.event_type, 'evt_' || replace(gen_random_uuid()::text, '-', '') AS event_id
    FROM ended n WHERE n.owner IS NOT NULL
),
outbox AS (
  INSERT INTO ${s}.webhook_deliveries (endpoint_id, event_id, event_type, batch_id, event_created_at)
  SELECT w.id, v.event_id, v.event_type, v.id, v.finished_at
    FROM event v
    JOIN ${s}.webhook_endpoints w
      ON w.owner = v.owner AND w.deleted_at IS NULL AND w.disabled_at IS NULL AND v.event_type = ANY (w.events)
)
SELECT id FROM ended`;
}
