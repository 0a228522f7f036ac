/**
 * Per-daemon slot budgets (migrations/0004_model_budgets.sql): how the global per-model limit
 * (model_limits.concurrency, rule 13 of docs/decisions/0003) is shared between daemons without a global
 * lock on the hot path.
 *
 * Invariant: for every model, sum(slots) over daemons ≤ concurrency, and a daemon never has more
 * requests of the model in flight than its slots (its claims are capped by its row, claim.ts). So
 * the requests in flight at the upstream never exceed the limit. Budgets only GROW in
 * rebalanceSql, inside a transaction that first locks the model's model_limits row (lockLimitsSql):
 * rebalances of all daemons for one model are serialised, and each one reads the others' slots in
 * a snapshot taken after the lock was granted (a second statement; a single statement's snapshot
 * would predate the lock and could miss a grant committed while it waited).
 *
 * A daemon rebalances when its demand changes and every budget interval (250 ms by default), never
 * per request. Fair share: among the live daemons with demand for a model (n of them), a daemon's
 * target is min(wanted, ceil(limit / n) + what the others leave unused of their shares); it is
 * granted min(target, limit − others' slots), its room. A daemon above its room keeps the slots its
 * in-flight requests use (requests are never aborted to rebalance) and gives them back as they
 * finish; it starts no new request above its room meanwhile (the `target` returned is the room, not
 * the fair share). Capped by the fair share alone, two daemons draining a limit lowered from 10 to
 * 3 each kept 2 in flight (share ceil(3/2)), reported `used` = 2 at every rebalance and so kept 2
 * slots each: 4 in flight at the upstream and sum(slots) = 4 > 3 for as long as a rebalance never
 * caught one of them between a finished request and its refill (test/daemon/budgets.test.ts
 * "lowering a limit" failed a CI run so, and locally beside stress-ng --cpu 4 at load 6–7: both
 * rows fresh at 2 + 2 for its whole 60 s wait; with the room it settled at 3 + 0 in 0.9 s).
 *
 * Lowering a limit (setModelConcurrency): each daemon sees it at its next rebalance (within one
 * budget interval), stops starting requests above its room, and its slots fall to the room as its
 * in-flight requests finish, so sum(slots) is back within the new limit once the requests in flight
 * at the change have ended. During that drain the total in flight is between the new
 * and the old limit, never above the old one; no request is aborted. Raising a limit: the room is
 * taken at the daemons' next rebalance.
 *
 * A slot is free again as soon as its HTTP attempt is over, before the attempt's row write commits
 * (the daemon writes outcomes in batches): the count of 'processing' rows in the database (dashboard)
 * may therefore exceed the limit by the writes not yet committed, while the upstream never sees
 * more than the limit. An aborted attempt (cancel, deadline, timeout) frees its slot at once too,
 * though the upstream counts it until it reads the connection's close: a slot refilled at that
 * moment stands beside it briefly. Rows of the cancelled batch itself are never sent on such a slot,
 * even when a claim running across the cancel returns some (src/daemon/pipe.ts closedBatches).
 *
 * Dead daemons: their slots keep counting until reclaim.ts deletes their rows, in the same
 * transaction that hands their requests back (their requests may still be on the wire until then).
 *
 * Alternatives measured (bench/daemon-throughput.ts and bench/cli-run.ts, 2-core machine, each
 * design run minutes apart against raw undici in the same run): locking the model rows in every
 * claim transaction (the previous design: BEGIN + SELECT … FOR UPDATE + write-and-claim + COMMIT,
 * two cycles overlapped) gave 7.76–7.91 s for 20,000 requests at zero latency (23–24% of raw
 * undici), 2.47–2.49 s for 2,000 at 100 ms, and 39% / 38% for `fusillade run`; with these budgets,
 * 4.0–4.6 s (38–43%), 2.26–2.36 s (raw undici alone: 2.14–2.46 s), and 47% / 46%. A rebalance
 * costs 4 round trips (≈1–3 ms) a few times a second. The KEY SHARE lock a claim takes on its
 * budget row (claim.ts) made no measurable difference to throughput.
 */

/** Locks the limit rows of the models ($1 text[]), ORDER BY model so daemons never deadlock. */
export function lockLimitsSql(s: string): string {
  return `
SELECT ml.model, ml.concurrency
  FROM ${s}.model_limits ml
 WHERE ml.model = ANY ($1::text[])
 ORDER BY ml.model
   FOR UPDATE OF ml`;
}

/**
 * Recomputes this daemon's budgets (run after lockLimitsSql, in the same transaction).
 * $1 uuid daemon, $2 text[] models, $3 int[] wanted (demand: in use + more it would send now),
 * $4 int[] used (slots it cannot give back: requests in flight or being claimed), $5 int dead-daemon
 * ms (daemons silent longer do not count as demand, but their slots still count until reclaimed).
 *
 * Rows with no slots and no demand are deleted. Returns per model: slots (granted), target (the
 * room: fair share within limit − others' slots; the daemon starts requests only below
 * min(slots, target)), limit, peers with demand, and `held`: whether this daemon's row was there
 * before the statement. A row missing while `used` > 0 was deleted by another daemon's reclaim
 * (reclaim.ts: this daemon was declared lost): its slots went into the others' rooms, so the daemon
 * aborts what it still sends (daemon.ts fenceAfterLost) rather than keep `used` slots beside theirs.
 */
export function rebalanceSql(s: string): string {
  return `
WITH w AS (
  SELECT * FROM unnest($2::text[], $3::int[], $4::int[]) AS w(model, wanted, used)
),
mine AS (
  SELECT b.model FROM ${s}.model_budgets b WHERE b.daemon_id = $1 AND b.model = ANY ($2::text[])
),
peer AS (
  SELECT b.model, b.slots, b.wanted,
         (d.id IS NOT NULL AND d.stopped_at IS NULL
          AND d.heartbeat_at >= now() - $5 * interval '1 millisecond' AND b.wanted > 0) AS demanding
    FROM ${s}.model_budgets b LEFT JOIN ${s}.daemons d ON d.id = b.daemon_id
   WHERE b.model = ANY ($2::text[]) AND b.daemon_id <> $1
),
calc AS (
  SELECT w.model, w.wanted, w.used, ml.concurrency AS lim,
         coalesce((SELECT sum(p.slots) FROM peer p WHERE p.model = w.model), 0)::int AS others,
         (SELECT count(*) FROM peer p WHERE p.model = w.model AND p.demanding)::int AS peers
    FROM w JOIN ${s}.model_limits ml ON ml.model = w.model
),
shared AS (
  SELECT c.*, ceil(c.lim::numeric / (c.peers + 1))::int AS share FROM calc c
),
target AS (
  SELECT sh.*,
         least(sh.wanted,
               sh.share + greatest(0, sh.lim - least(sh.wanted, sh.share)
                                     - coalesce((SELECT sum(least(p.wanted, sh.share)) FROM peer p
                                                  WHERE p.model = sh.model AND p.demanding), 0)))::int AS target
    FROM shared sh
),
room AS (
  SELECT t.*, least(t.target, greatest(0, t.lim - t.others))::int AS room FROM target t
),
granted AS (
  SELECT r.*, greatest(r.used, r.room)::int AS slots FROM room r
),
upserted AS (
  INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted)
  SELECT g.model, $1, g.slots, g.wanted FROM granted g WHERE g.slots > 0 OR g.wanted > 0
  ON CONFLICT (model, daemon_id) DO UPDATE
     SET slots = EXCLUDED.slots, wanted = EXCLUDED.wanted, updated_at = now()
),
released AS (
  DELETE FROM ${s}.model_budgets b USING granted g
   WHERE b.model = g.model AND b.daemon_id = $1 AND g.slots = 0 AND g.wanted = 0
)
SELECT g.model, g.slots, g.room AS target, g.lim, g.peers,
       EXISTS (SELECT 1 FROM mine WHERE mine.model = g.model) AS held
  FROM granted g`;
}

/** Deletes this daemon's budgets ($1 uuid): nothing of it is in flight any more (stop). */
export function releaseBudgetsSql(s: string): string {
  return `DELETE FROM ${s}.model_budgets WHERE daemon_id = $1`;
}
