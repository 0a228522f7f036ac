import { liveBatchSql } from '../../../domain/batch-lifecycle.js';

/**
 * Who goes first within a model (issue 15, docs/decisions/0007-fair-share.md): the claim's
 * `picked` rows, chosen in PostgreSQL by every daemon alike, with no central process.
 *
 *   1. Owners share a model's slots in proportion to their weights (owner_weights, default 1),
 *      across all daemons: each claim counts the model's rows in flight per owner ('claimed' or
 *      'processing', any daemon: requests_inflight_idx, a set no larger than the limit plus what
 *      daemons hold ahead), then hands its `cap` rows out one by one to the owner whose
 *      (in flight + rows given) / weight is lowest (water-filling: `quota`). Ties go to the owner
 *      with the nearer deadline, then by name.
 *   2. Each owner's quota is taken from its live batches nearest deadline first (a raised batch,
 *      one at risk of missing its deadline, before all others of its owner), oldest line first
 *      (`fair`).
 *   3. Work-conserving: what the quotas could not fill (an owner with fewer pending rows than its
 *      quota, rows locked by another daemon's claim, an owner with no rows of this model) is taken
 *      in owner order, lowest (in flight + quota) / weight first (`rest`). No slot idles while any
 *      owner has a claimable row.
 *
 * A raised batch (batches.raised_at, set by maintenance when the batch would miss its deadline at
 * its current rate: at-risk.ts) counts its owner's weight RAISED_WEIGHT_FACTOR times.
 *
 * Concurrent claims (several daemons, or one daemon's overlapping claims) each see the others'
 * committed rows only: two claims at once may both favour the same owner, which the next claims
 * correct (the counts are re-read every claim). The model's limit is not at stake (budgets cap
 * every claim: budget.ts); only the split of the limit between owners is approximate, by at most
 * the rows of the claims running at once.
 *
 * With one owner of live work (the common case: `fusillade run`, a single-tenant server) the split
 * is moot, so `in_flight` is not counted (a one-time filter on live_owner's count): it reads every
 * row in flight of the claimed models (requests_inflight_idx, model in its key) and its batch's
 * owner, ≈ 416 of a claim's 2,500 buffer hits mid-run in the 20k × 0 ms job at 64 in flight.
 *
 * Cost per model: the in-flight rows (≤ limit + ahead), owners × cap generated ranks for the quota,
 * and one index probe per (live batch of an owner with a quota, route) until the quota is met, as
 * the plain deadline-order walk had; `rest` runs only for a claim its quotas left short. Measured
 * with bench/claim-latency.ts (figures in docs/decisions/0007).
 */

/** How much a raised (at-risk) batch multiplies its owner's weight in the claim. */
export const RAISED_WEIGHT_FACTOR = 4;

const LIVE = liveBatchSql('b');

/**
 * One batch's claimable pending rows of a model on a route, in the order they go out (the one
 * place that order is stated: prompt prefix, then line, claim.ts "Prefix order"; the order of
 * requests_pending_route_idx), locked SKIP LOCKED. A coalesced follower (coalesced_into set,
 * docs/decisions/0008) is outside that index and never taken. `batch`, `model`, `route`, `limit` and
 * `exclude` (an SQL uuid[] expression of rows this statement already took, or null) are SQL
 * expressions of the enclosing query.
 */
export function batchPendingRowsSql(
  s: string,
  p: { batch: string; model: string; route: string; limit: string; exclude: string | null },
): string {
  return `SELECT r.id, r.ctid AS row_ctid, r.template_id, r.line_number FROM ${s}.requests r
           WHERE r.batch_id = ${p.batch} AND r.model = ${p.model} AND r.route_id = ${p.route} AND r.state = 'pending'
             AND r.coalesced_into IS NULL AND (r.not_before IS NULL OR r.not_before <= now())${p.exclude ? `\n             AND r.id <> ALL (${p.exclude})` : ''}
           ORDER BY r.prefix_hash, r.line_number
           LIMIT ${p.limit}
             FOR UPDATE OF r SKIP LOCKED`;
}

/**
 * The claim's `live` (claimable batches with their owner), `owner_level`, `quota`, `fair`, `rest`
 * and `picked(id, row_ctid, template_id, file_id, line_number, expires_at)` CTEs (what the claim's
 * UPDATE needs to reach the row and its template without random index descents: claim.ts); they
 * read a `want(model, cap, routes)` CTE defined before.
 */
export function fairPickedCtes(s: string): string {
  return `live AS MATERIALIZED (
  SELECT b.id, b.file_id, b.expires_at, coalesce(b.owner, '') AS owner, b.raised_at IS NOT NULL AS raised,
         row_number() OVER (ORDER BY b.raised_at IS NULL, b.expires_at, b.created_at, b.id) AS pos
    FROM ${s}.batches b WHERE ${LIVE}
   ORDER BY pos
),
live_owner AS MATERIALIZED (
  SELECT lb.owner, min(lb.expires_at) AS deadline,
         coalesce(max(ow.weight), 1)::float8 * CASE WHEN bool_or(lb.raised) THEN ${RAISED_WEIGHT_FACTOR} ELSE 1 END AS weight
    FROM live lb LEFT JOIN ${s}.owner_weights ow ON ow.owner = lb.owner
   GROUP BY lb.owner
),
in_flight AS MATERIALIZED (
  SELECT f.model, coalesce(b.owner, '') AS owner, count(*)::int AS n
    FROM ${s}.requests f JOIN ${s}.batches b ON b.id = f.batch_id
   WHERE f.model = ANY (ARRAY(SELECT model FROM want WHERE cap > 0)) AND f.state IN ('claimed', 'processing')
     AND (SELECT count(*) FROM live_owner) > 1
   GROUP BY 1, 2
),
owner_level AS MATERIALIZED (
  SELECT w.model, o.owner, o.weight, o.deadline, coalesce(f.n, 0) AS in_flight
    FROM want w CROSS JOIN live_owner o
    LEFT JOIN in_flight f ON f.model = w.model AND f.owner = o.owner
   WHERE w.cap > 0
),
quota AS MATERIALIZED (
  SELECT g.model, g.owner, count(*)::int AS n
    FROM (SELECT ol.model, ol.owner, w.cap,
                 row_number() OVER (PARTITION BY ol.model
                                    ORDER BY (ol.in_flight + k)::float8 / ol.weight, ol.deadline NULLS LAST, ol.owner) AS rank
            FROM owner_level ol JOIN want w ON w.model = ol.model
           CROSS JOIN LATERAL generate_series(1, w.cap) AS k) g
   WHERE g.rank <= g.cap
   GROUP BY 1, 2
),
fair AS MATERIALIZED (
  SELECT q.model, p.id, p.row_ctid, p.template_id, p.file_id, p.line_number, p.expires_at
    FROM quota q JOIN want w ON w.model = q.model
    CROSS JOIN LATERAL (
      SELECT r.id, r.row_ctid, r.template_id, lb.file_id, r.line_number, lb.expires_at
        FROM live lb
        CROSS JOIN LATERAL unnest(w.routes) AS rt(route_id)
        CROSS JOIN LATERAL (
          ${batchPendingRowsSql(s, { batch: 'lb.id', model: 'w.model', route: 'rt.route_id', limit: 'q.n', exclude: null })}) r
       WHERE lb.owner = q.owner
       LIMIT q.n) p
),
rest AS MATERIALIZED (
  SELECT p.id, p.row_ctid, p.template_id, p.file_id, p.line_number, p.expires_at
    FROM want w
    CROSS JOIN LATERAL (SELECT w.cap - count(*)::int AS n FROM fair WHERE fair.model = w.model) AS short
    CROSS JOIN LATERAL (
      SELECT r.id, r.row_ctid, r.template_id, lb.file_id, r.line_number, lb.expires_at
        FROM (SELECT lb.id, lb.file_id, lb.expires_at
                FROM live lb
                JOIN owner_level ol ON ol.model = w.model AND ol.owner = lb.owner
                LEFT JOIN quota q ON q.model = w.model AND q.owner = lb.owner
               ORDER BY (ol.in_flight + coalesce(q.n, 0))::float8 / ol.weight, ol.deadline NULLS LAST, ol.owner, lb.pos
              OFFSET 0) lb
        CROSS JOIN LATERAL unnest(w.routes) AS rt(route_id)
        CROSS JOIN LATERAL (
          ${batchPendingRowsSql(s, { batch: 'lb.id', model: 'w.model', route: 'rt.route_id', limit: 'short.n', exclude: 'ARRAY(SELECT id FROM fair)' })}) r
       LIMIT short.n) p
   WHERE w.cap > 0 AND short.n > 0
),
picked AS (
  SELECT id, row_ctid, template_id, file_id, line_number, expires_at FROM fair
  UNION ALL SELECT id, row_ctid, template_id, file_id, line_number, expires_at FROM rest
)`;
}
