/**
 * Writes the outcomes of many attempts in one statement (rules 1, 7 and 10 of docs/decisions/0003): one
 * UPDATE … FROM unnest(…) per flush, each row guarded on state = 'processing', its daemon and its
 * attempt, so a stale daemon (paused, declared dead, its rows reclaimed and sent again by another)
 * cannot overwrite anything. The statement returns the ids of the writes that did not apply (stale:
 * the row moved on), usually none.
 *
 * New states: 'completed' | 'failed' | 'canceled' (terminal, completed_at set) or 'pending' (a retry
 * at not_before, or a hand-back). Pending rows keep the last attempt's status/body/error as the
 * request's last error, so a retriable failure is visible without the row reading as failed.
 *
 * $1 uuid daemon id, $2 json: the daemon's ResultWrite objects as JSON.stringify writes them (keys
 * are matched by name; batchId, model and reason are ignored; notBefore is an ISO timestamp).
 * $3 text: the body of a lone write whose JSON has none (a large answer, written as a parameter of
 * its own so that it is not copied into the JSON; src/daemon/daemon.ts), else null.
 * `r.id = ANY(ARRAY(…))` gives the planner the primary-key path: with the join alone it estimated
 * 100 rows and hashed a sequential scan of the table (cost growing with the table).
 * The guard reads `CASE WHEN r.state = 'processing' THEN r.daemon_id END = $1` (the same test)
 * so that it implies no partial index's predicate: written `r.state = 'processing' AND
 * r.daemon_id = $1`, the planner, whose statistics of a fresh batch say no row is in flight
 * (ANALYZE after the insert), estimated one row and walked requests_inflight_idx (every row of
 * the model in flight, and the dead entries of all rows that went through it since the last
 * vacuum) instead of probing the ids: mid-run in the 20k × 0 ms job, 40 writes hit 762–782
 * buffers and took 1.6 ms against ≈ 160 buffers through requests_pkey (EXPLAIN ANALYZE, custom
 * and generic plans alike; pg_stat_statements over that run: 50 buffer hits per request). In runs
 * where the walk does not happen (fewer dead entries), the pkey path costs ≈ 3 % more hits (21 a
 * request against 20.4: docs/decisions/pipe-profile-20k.md).
 *
 * One json parameter rather than parallel arrays: node-pg escapes array elements in JavaScript
 * (measured alternatives: docs/decisions/0004). JSON.stringify emits a
 * lone surrogate as an escape PostgreSQL refuses, which would fail the whole statement: the one
 * string cut from a body (settle.ts, the error snippet) never splits a surrogate pair; the rest come
 * whole from UTF-8 decoding or are ASCII.
 *
 * Coalesced batches (issue 15 item 4, docs/decisions/0008): the write that ends a leader (completed
 * or failed) copies its outcome to its followers (pending rows whose coalesced_into names it, found
 * through requests_coalesced_idx, empty unless batches coalesce), in the same statement, so a
 * batch's rows are never seen with a leader ended and its followers waiting. Followers get no
 * token counts: usage counts what was sent. A cancelled leader copies nothing (its batch is
 * cancelled or expired, so its pending followers read as canceled already).
 *
 * Alternatives (one UPDATE per request, a VALUES list) and their costs: docs/decisions/0004.
 * Measured in isolation on 20,000 rows: 32 writes p50 1.5 ms, 32 claims 1.45 ms. requests_lease_idx
 * (one index entry per claimed row) is gone since migration 0023: in CPU time alone its cost did
 * not show (74–78 µs a request with it, 76 µs without, claim 32 + complete 32 on one connection);
 * in buffer hits and WAL per request it did (docs/decisions/pipe-profile-20k.md), and the reclaim
 * already read requests_inflight_idx whole.
 */
export function completeSql(s: string): string {
  return `
WITH u AS MATERIALIZED (
  SELECT * FROM json_to_recordset($2::json) AS u(
    "id" uuid, "attempt" int, "state" text, "notBefore" timestamptz, "status" int, "body" text,
    "upstreamId" text, "errorCode" text, "errorMessage" text, "inputTokens" int, "cachedTokens" int,
    "outputTokens" int, "reasoningTokens" int, "totalTokens" int, "giveBack" bool)
),
done AS (
UPDATE ${s}.requests r SET
  state               = u.state,
  attempt             = CASE WHEN u."giveBack" THEN greatest(r.attempt - 1, 0) ELSE r.attempt END,
  not_before          = u."notBefore",
  daemon_id           = CASE WHEN u.state = 'pending' THEN NULL ELSE r.daemon_id END,
  claimed_at          = CASE WHEN u.state = 'pending' THEN NULL ELSE r.claimed_at END,
  lease_expires_at    = NULL,
  completed_at        = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END,
  response_status     = CASE WHEN u."giveBack" THEN r.response_status ELSE u.status END,
  response_body       = CASE WHEN u."giveBack" THEN r.response_body ELSE coalesce(u.body, $3::text) END,
  upstream_request_id = CASE WHEN u."giveBack" THEN r.upstream_request_id ELSE u."upstreamId" END,
  error_code          = CASE WHEN u."giveBack" THEN r.error_code ELSE u."errorCode" END,
  error_message       = CASE WHEN u."giveBack" THEN r.error_message ELSE u."errorMessage" END,
  input_tokens        = u."inputTokens",
  cached_tokens       = u."cachedTokens",
  output_tokens       = u."outputTokens",
  reasoning_tokens    = u."reasoningTokens",
  total_tokens        = u."totalTokens"
FROM u
WHERE r.id = ANY (ARRAY(SELECT u.id FROM u)) AND r.id = u.id
  AND CASE WHEN r.state = 'processing' THEN r.daemon_id END = $1 AND r.attempt = u.attempt
RETURNING r.id, r.state, r.completed_at, r.response_status, r.response_body, r.upstream_request_id,
          r.error_code, r.error_message
),
copied AS (
UPDATE ${s}.requests f SET
  state = d.state, completed_at = d.completed_at, not_before = NULL, response_status = d.response_status,
  response_body = d.response_body, upstream_request_id = d.upstream_request_id, error_code = d.error_code,
  error_message = d.error_message
FROM done d
WHERE f.coalesced_into = d.id AND d.state IN ('completed', 'failed') AND f.state = 'pending'
)
SELECT u.id FROM u WHERE u.id NOT IN (SELECT d.id FROM done d)`;
}
