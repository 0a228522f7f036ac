/**
 * Writes the outcomes of many attempts in one statement (REFERENCE §4 lessons 1, 7, 10): one
 * UPDATE … FROM unnest(…) per flush, each row guarded on state = 'processing', its daemon and its
 * attempt, so a stale daemon (paused, declared dead, its rows reclaimed and sent again by another)
 * cannot overwrite anything. The statement returns the ids of the writes that did not apply (stale:
 * the row moved on), usually none.
 *
 * New states: 'completed' | 'failed' | 'canceled' (terminal, completed_at set) or 'pending' (a retry
 * at not_before, or a hand-back). Pending rows keep the last attempt's status/body/error as the
 * request's last error, so a retriable failure is visible without the row reading as failed.
 *
 * `r.id = ANY($2)` gives the planner the primary-key path: with the unnest join alone it estimated
 * 100 rows and hashed a sequential scan of the table (cost growing with the table).
 *
 * Alternatives: one UPDATE per request costs a round trip each (≈1.9k/s for claim + complete per
 * worker in REFERENCE §6); a multi-row VALUES list needs per-flush SQL text and loses plan reuse.
 * One json parameter (json_to_recordset) instead of 13 arrays: 25 against 50 µs of client-side
 * encoding per 20 writes, ≈1 µs a request, not worth a second shape of this SQL. Returning every
 * applied id (as before) instead of the stale ones cost the daemon a decoded row per write.
 * Measured in isolation on 20,000 rows: 32 writes p50 1.5 ms, 32 claims 1.45 ms; dropping
 * requests_lease_idx (one index entry fewer per claimed row) made no measurable difference.
 */
export function completeSql(s: string): string {
  return `
WITH done AS (${completeUpdateSql(s)}
  RETURNING r.id
)
SELECT u.id FROM unnest($2::uuid[]) AS u(id) WHERE u.id NOT IN (SELECT d.id FROM done d)`;
}

/** The guarded UPDATE of completeSql, without RETURNING. */
export function completeUpdateSql(s: string): string {
  return `
UPDATE ${s}.requests r SET
  state               = u.state,
  attempt             = CASE WHEN u.give_back THEN greatest(r.attempt - 1, 0) ELSE r.attempt END,
  not_before          = u.not_before,
  daemon_id           = CASE WHEN u.state = 'pending' THEN NULL ELSE r.daemon_id END,
  claimed_at          = CASE WHEN u.state = 'pending' THEN NULL ELSE r.claimed_at END,
  lease_expires_at    = NULL,
  completed_at        = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END,
  response_status     = CASE WHEN u.give_back THEN r.response_status ELSE u.status END,
  response_body       = CASE WHEN u.give_back THEN r.response_body ELSE u.body END,
  upstream_request_id = CASE WHEN u.give_back THEN r.upstream_request_id ELSE u.upstream_id END,
  error_code          = CASE WHEN u.give_back THEN r.error_code ELSE u.error_code END,
  error_message       = CASE WHEN u.give_back THEN r.error_message ELSE u.error_message END,
  input_tokens        = u.input_tokens,
  output_tokens       = u.output_tokens,
  total_tokens        = u.total_tokens
FROM unnest($2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::int[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::int[], $12::int[], $13::int[], $14::bool[])
     AS u(id, attempt, state, not_before, status, body, upstream_id, error_code, error_message,
          input_tokens, output_tokens, total_tokens, give_back)
WHERE r.id = ANY ($2::uuid[]) AND r.id = u.id AND r.state = 'processing' AND r.daemon_id = $1 AND r.attempt = u.attempt`;
}
