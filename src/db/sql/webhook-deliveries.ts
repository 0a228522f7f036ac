/**
 * The webhook deliverers' statements (src/webhooks/delivery.ts). Any number of deliverers (every
 * daemon runs one) share the outbox; each attempt is owned by one of them through a lease:
 *
 * claim    Takes up to $2 due pending rows, oldest first, with FOR UPDATE SKIP LOCKED (deliverers
 *          claiming at once take different rows), counts the attempt, sets lease_token = $1 and pushes
 *          next_attempt_at $3 ms ahead: the row is nobody else's until then, after the claim has
 *          committed too. A deliverer that dies mid-attempt leaves it due again once that passes.
 *          Returns what the attempt needs, the endpoint's url and secret included.
 * settle   Writes one attempt's outcome, guarded by the lease token (a deliverer whose lease ran out,
 *          its row claimed again by another, writes nothing), and updates the endpoint's failure
 *          streak in the same statement; the attempt that disables an endpoint also fails the
 *          endpoint's other pending deliveries.
 * release  Hands claimed rows back undelivered (a deliverer stopping mid-attempt): due at once, the
 *          attempt not counted.
 *
 * The claim reads webhook_deliveries_due_idx (pending rows by next_attempt_at): a handful of rows in
 * a steady state, so polling it every second per deliverer costs next to nothing.
 */

/** $1 lease token (uuid), $2 most rows, $3 lease in ms. */
export function claimDeliveriesSql(s: string): string {
  return `
WITH due AS (
  SELECT d.id FROM ${s}.webhook_deliveries d
   WHERE d.state = 'pending' AND d.next_attempt_at <= now()
   ORDER BY d.next_attempt_at
   LIMIT $2
     FOR UPDATE SKIP LOCKED
)
UPDATE ${s}.webhook_deliveries d
   SET attempts = d.attempts + 1, lease_token = $1, next_attempt_at = now() + $3 * interval '1 millisecond'
  FROM due, ${s}.webhook_endpoints e
 WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.event_id, d.event_type, d.batch_id, d.attempts,
          floor(extract(epoch FROM d.event_created_at))::bigint AS event_created_at,
          e.id AS endpoint_id, e.url, e.secret,
          (e.disabled_at IS NOT NULL OR e.deleted_at IS NOT NULL) AS inactive`;
}

/**
 * $1 delivery id, $2 lease token, $3 delivered (bool), $4 HTTP status or null, $5 error text or
 * null, $6 ms until the next attempt (null: no attempt left), $7 failures that disable, $8 shortest
 * failing streak (ms) that disables. Returns the endpoint id and whether this attempt disabled it.
 * The endpoint row is locked first (`ep`), so attempts of one endpoint settling at once count their
 * failures one after the other; the attempt that disables the endpoint ends its own delivery
 * failed too, and every other pending one of the endpoint.
 */
export function settleDeliverySql(s: string): string {
  return `
WITH cur AS (
  SELECT d.endpoint_id FROM ${s}.webhook_deliveries d
   WHERE d.id = $1 AND d.lease_token = $2 AND d.state = 'pending'
),
ep AS (
  SELECT e.id,
         (NOT $3 AND e.disabled_at IS NULL AND e.failures + 1 >= $7
          AND now() - coalesce(e.failing_since, now()) >= $8 * interval '1 millisecond') AS disable
    FROM ${s}.webhook_endpoints e JOIN cur ON e.id = cur.endpoint_id
     FOR UPDATE OF e
),
d AS (
  UPDATE ${s}.webhook_deliveries x SET
    state           = CASE WHEN $3 THEN 'delivered' WHEN $6::bigint IS NULL OR ep.disable THEN 'failed' ELSE 'pending' END,
    delivered_at    = CASE WHEN $3 THEN now() END,
    next_attempt_at = CASE WHEN NOT $3 AND $6::bigint IS NOT NULL AND NOT ep.disable
                           THEN now() + $6::bigint * interval '1 millisecond' ELSE x.next_attempt_at END,
    lease_token     = NULL,
    last_status     = $4,
    last_error      = CASE WHEN ep.disable THEN $5 || '; endpoint disabled after repeated failures' ELSE $5 END
    FROM ep
   WHERE x.id = $1 AND x.lease_token = $2 AND x.state = 'pending'
  RETURNING x.endpoint_id
),
e AS (
  UPDATE ${s}.webhook_endpoints e SET
    failures        = CASE WHEN $3 THEN 0 ELSE e.failures + 1 END,
    failing_since   = CASE WHEN $3 THEN NULL ELSE coalesce(e.failing_since, now()) END,
    last_success_at = CASE WHEN $3 THEN now() ELSE e.last_success_at END,
    last_failure_at = CASE WHEN $3 THEN e.last_failure_at ELSE now() END,
    last_error      = CASE WHEN $3 THEN e.last_error ELSE $5 END,
    disabled_at     = CASE WHEN ep.disable THEN now() ELSE e.disabled_at END
    FROM ep, d
   WHERE e.id = ep.id
),
dropped AS (
  UPDATE ${s}.webhook_deliveries x SET state = 'failed', lease_token = NULL,
         last_error = 'endpoint disabled after repeated failures'
    FROM ep, d
   WHERE ep.disable AND x.endpoint_id = ep.id AND x.state = 'pending' AND x.id <> $1
)
SELECT ep.id AS endpoint_id, ep.disable AS disabled_now FROM ep, d`;
}

/** $1 lease token, $2 delivery ids. */
export function releaseDeliveriesSql(s: string): string {
  return `
UPDATE ${s}.webhook_deliveries SET lease_token = NULL, next_attempt_at = now(), attempts = greatest(attempts - 1, 0)
 WHERE id = ANY ($2::uuid[]) AND lease_token = $1 AND state = 'pending'`;
}

/** A delivery whose endpoint was disabled or removed after it was written: failed without an attempt. */
export function dropDeliverySql(s: string): string {
  return `
UPDATE ${s}.webhook_deliveries SET state = 'failed', lease_token = NULL, last_error = 'endpoint disabled or removed',
       attempts = greatest(attempts - 1, 0)
 WHERE id = $1 AND lease_token = $2 AND state = 'pending'`;
}
