import { liveBatchSql } from '../../../domain/batch-lifecycle.js';
import { fairPickedCtes } from './fair-share.js';

/**
 * The claim (rules 2, 3, 4 and 13 of docs/decisions/0003): one statement, in its own (autocommit) transaction,
 * needing no global lock:
 *
 *   - per model, cap = least(the daemon's want, its budget's slots − what it already holds): the
 *     budget row (model_budgets, see budget.ts) is this daemon's share of the global limit, and the
 *     daemon passes what it holds (requests in flight plus the caps of its other claims still
 *     running), which it counts locally and exactly. The budget row is read FOR KEY SHARE: a reclaim
 *     deleting the budget of a daemon declared dead waits for such a claim to commit, then hands its
 *     rows back too; a claim after the delete finds no row and takes nothing. A budget row lowered
 *     by a rebalance is seen by the next claim.
 *   - ONE statement over all models shares each model's cap between the owners with live batches
 *     by weight, global across daemons (fair-share.ts), walks each owner's live batches nearest
 *     deadline first (sorted once per statement, a handful of rows) and takes each batch's pending lines of the model on each route
 *     this daemon serves, in prompt-prefix order, then line order (requests_pending_route_idx:
 *     batch, model, route, prefix_hash, line; see "Prefix order" below) with FOR
 *     UPDATE SKIP LOCKED, so a daemon may run several claims at once (and several daemons claim side
 *     by side) without waiting on each other. A batch without the model, or whose lines of it are all
 *     taken, costs one index probe per route (≈4 µs); probing batch_models first cost ≈17 µs per
 *     batch, so batch_routes is only used to know which (model, route) pairs have live work
 *     (liveRoutesSql).
 *   - Routes (issue 18, src/domain/upstream-route.ts): each request carries the route its batch
 *     recorded (upstream + credential). The daemon passes, per model, the routes with live work that
 *     it can send exactly as recorded (src/daemon/upstreams.ts); rows of other routes are never
 *     touched, so they wait for a daemon that can send them instead of going elsewhere. The list is
 *     usually one route; a filter `route_id = ANY(…)` under `ORDER BY line_number` would have to read
 *     and sort the batch's whole pending set, hence one ordered probe per route.
 *
 * Rows go straight to 'processing' (held by this daemon) with started_at set: the claim's commit is
 * the durable mark that the request may be on the wire, so a crash after it is recovered by reclaim,
 * and no second round trip sits between claim and send. The daemon claims ahead of need (free slots
 * plus `ahead` rows, src/daemon/ledger.ts) and queues the rows locally; a queued row never sent goes
 * back as a hand-back (complete.ts). `held` ($3) is what the daemon holds beyond that `ahead`
 * allowance (in flight + queued + its other claims' caps − ahead; may be negative), so `slots −
 * held` lets it hold exactly its free slots plus `ahead`, and a lowered or deleted budget row still
 * stops the claim. 'claimed' stays reserved (src/domain/request-state.ts); reclaim, cancel and
 * hand-back treat both alike. `attempt` counts claims and is part of every later write's guard.
 *
 * Cost is bounded by (live batches of the model + cap) per model, not by the backlog: the LATERAL
 * per batch stops at cap rows, the outer LIMIT stops the batch walk. The UPDATE finds its rows by
 * `ctid = ANY(ARRAY(…))` (a Tid Scan): the picked rows are locked FOR UPDATE by this same statement,
 * so their ctid cannot change before the UPDATE. Joining the CTE alone let the planner hash a
 * sequential scan of the whole requests table (18 ms at 20k rows, growing with the table); by
 * `id = ANY(ARRAY(…))` each row cost a descent of requests_pkey, a random leaf of a 10M-entry index
 * when ids are random. (Should a picked row's ctid ever point at a version this statement's snapshot
 * does not see, the row is simply not claimed this time: `r.id = p.id` is checked too.)
 *
 * Each row's template is read through request_templates_file_line_idx (the batch's file, the
 * request's line: createBatch makes every request from the line of the batch's file it names), where
 * a batch's templates sit together, rather than by template id (request_templates_pkey: one random
 * leaf per row when ids are random). The id is still checked, and a row whose template is not at its
 * (file, line) falls back to the lookup by id (the UNION ALL's second branch, run only then).
 * On the 10M-row bench database (bench/big-database.ts, docs/decisions/claim-at-10m.md), 300 claims
 * of 100 rows, generic plan: shared blocks read per claim p50 179–198 → 69–71, I/O read time per
 * claim p50 3.9–5.9 → 0.4–0.5 ms (track_io_timing), execution p50 15.1–16.7 → 9.8–10.0 ms
 * (A B B A at load 9–13; at load 3.5: 8.1–12.7 → 5.1–5.5 ms, p99 19.9–27.8 → 6.7–14.1 ms).
 *
 * Prefix order (issue 15, docs/decisions/0008): each request carries the hash of its prompt prefix
 * (system prompt and first message, src/domain/prompt-prefix.ts; NULL when it has none, sorted
 * last). Taking a batch's rows by (prefix_hash, line_number) sends the requests sharing a prefix one
 * after the other, so an upstream's prefix cache holds the one prefix in use instead of evicting
 * it between uses. Counted at the caching mock (src/mock-upstream/prefix-cache.ts, 4 prefixes),
 * 2,000 requests over 20 system prompts in shuffled order: 99 % hits against 22 % in line order
 * (test/daemon/prompt-prefix.test.ts; docs/decisions/0008). The order costs nothing at claim time:
 * it is the index's order, one ordered probe as before. Followers of a coalesced batch
 * (coalesced_into set, docs/decisions/0008) are outside the index and never claimed.
 *
 * Alternatives measured (per-model queries, a global ORDER BY, the claim under a model_limits
 * lock, claim and complete in one statement) and why they lost: docs/decisions/0005.
 */

/** Live = claimable (src/domain/batch-lifecycle.ts, the one definition). */
const LIVE = liveBatchSql('b');

/**
 * $1 text[] models, $2 int[] wants (parallel), $3 int[] held (rows of the model this daemon holds
 * beyond its `ahead` allowance, see above), $4 uuid daemon id, $5 lease in ms, $6 text[] the
 * routes of each model this daemon serves, as int[] literals ('{3,7}'; see liveRoutesSql).
 * Returns the claimed rows with everything needed to send them.
 */
export function claimSql(s: string): string {
  return `
WITH ${claimCtes(s, { models: '$1', wants: '$2', held: '$3', daemon: '$4', routes: '$6' })}
${claimUpdate(s, { daemon: '$4', lease: '$5' })}`;
}

/** The claim's CTEs (want, live, picked), capped by the daemon's budget rows. */
export function claimCtes(
  s: string,
  p: { models: string; wants: string; held: string; daemon: string; routes: string },
): string {
  return `want AS MATERIALIZED (
  SELECT w.model, least(w.want, b.slots - w.held)::int AS cap, w.routes::int[] AS routes
    FROM unnest(${p.models}::text[], ${p.wants}::int[], ${p.held}::int[], ${p.routes}::text[]) AS w(model, want, held, routes)
    JOIN ${s}.model_budgets b ON b.model = w.model AND b.daemon_id = ${p.daemon}
     FOR KEY SHARE OF b
),
${liveAndPickedCtes(s)}`;
}

/**
 * The claim's `live` … `picked` CTEs: per model, up to `want.cap` pending rows on the routes this
 * daemon serves, shared between owners by weight and taken nearest deadline first within each
 * owner (fair-share.ts, docs/decisions/0007). They read a `want(model, cap, routes)` CTE defined
 * before.
 */
export function liveAndPickedCtes(s: string): string {
  return fairPickedCtes(s);
}

/**
 * The claim's UPDATE of the picked rows, returning what is needed to send them. The batch deadline
 * comes back as epoch ms (float8, parsed by parseFloat) rather than a timestamptz, which node-pg
 * parsed into a Date per row (postgres-date showed in the daemon's CPU profile); NULL for none.
 */
export function claimUpdate(s: string, p: { daemon: string; lease: string }): string {
  return `UPDATE ${s}.requests r
   SET state = 'processing', daemon_id = ${p.daemon}, claimed_at = now(), started_at = now(),
       lease_expires_at = now() + ${p.lease} * interval '1 millisecond', attempt = r.attempt + 1, not_before = NULL
  FROM picked p
 CROSS JOIN LATERAL (
   SELECT t.custom_id, t.method, t.path, t.body, t.api_key, t.content_type FROM ${s}.request_templates t
    WHERE t.file_id = p.file_id AND t.line_number = p.line_number AND t.id IS NOT DISTINCT FROM p.template_id
   UNION ALL
   SELECT t.custom_id, t.method, t.path, t.body, t.api_key, t.content_type FROM ${s}.request_templates t
    WHERE t.id = p.template_id
   LIMIT 1) t
 WHERE r.ctid = ANY (ARRAY(SELECT row_ctid FROM picked)) AND r.ctid = p.row_ctid AND r.id = p.id
RETURNING r.id, r.batch_id, r.model, r.route_id, r.attempt, floor(extract(epoch FROM p.expires_at) * 1000)::float8 AS expires_ms, t.custom_id, t.method, t.path,
          t.body, t.api_key, t.content_type`;
}

/**
 * The (model, route) pairs with live work, with each route's upstream and credential, inserting limit
 * rows for models that have none yet (the configured limit, else the default). Run on start, on every
 * poll and on batch notifications; the daemon keeps the pairs whose route it can send
 * (src/daemon/upstreams.ts) and claims those until the next refresh. $1 jsonb {model: n} configured
 * limits, $2 int default.
 */
export function liveRoutesSql(s: string): string {
  return `
WITH live AS (
  SELECT DISTINCT br.model, br.route_id FROM ${s}.batches b JOIN ${s}.batch_routes br ON br.batch_id = b.id WHERE ${LIVE}
),
seeded AS (
  INSERT INTO ${s}.model_limits (model, concurrency, from_default)
  SELECT DISTINCT l.model, coalesce(($1::jsonb ->> l.model)::int, $2), ($1::jsonb ->> l.model) IS NULL FROM live l
  ON CONFLICT (model) DO NOTHING
)
SELECT l.model, l.route_id, u.upstream, u.credential
  FROM live l JOIN ${s}.upstream_routes u ON u.id = l.route_id
 ORDER BY l.model, l.route_id`;
}

/**
 * Which limit a model has (README, "Leases, retries and limits"): a limit set for the model itself
 * (the daemon's configured limits, written by configureModelLimitsSql at its start, or
 * setModelConcurrency) stays until one is set again; else the default of the daemon started last,
 * which defaultModelLimitsSql writes over every row that came from a default (from_default), so the
 * `--default-limit` a user just typed governs the run's models even where an earlier run stored
 * another default. liveRoutesSql seeds the rows of models with none, and never overwrites one.
 */

/** Writes the configured limits at daemon start (configuration is the latest word). $1 text[], $2 int[]. */
export function configureModelLimitsSql(s: string): string {
  return `
INSERT INTO ${s}.model_limits (model, concurrency, from_default)
SELECT m.model, m.concurrency, false FROM unnest($1::text[], $2::int[]) AS m(model, concurrency)
ON CONFLICT (model) DO UPDATE SET concurrency = EXCLUDED.concurrency, from_default = false, updated_at = now()
 WHERE ${s}.model_limits.concurrency <> EXCLUDED.concurrency OR ${s}.model_limits.from_default`;
}

/** Writes the daemon's default over the limits that came from a default, at its start. $1 int. */
export function defaultModelLimitsSql(s: string): string {
  return `
UPDATE ${s}.model_limits SET concurrency = $1, updated_at = now()
 WHERE from_default AND concurrency <> $1`;
}
