/**
 * Requests and tokens per minute per model, held globally by all daemons on the database with no
 * central process (migrations/0006_model_rate_limits.sql; design and alternatives in
 * docs/decisions/rate-limits.md).
 *
 * Invariant: over any interval of length T, the requests (tokens, by the daemons' estimate) that
 * all daemons together start of a model are at most C + L·T + D·c, where L is the per-minute limit
 * in force (configured, else learned from the upstream's headers) as a rate, C the bucket's capacity
 * (L × burst seconds / 60), D the number of daemons and c the largest estimate error of one request
 * (a daemon may start a request while its wallet is positive, going into debt by at most that
 * much). A provider whose bucket holds at least C + D·c and refills at L therefore never refuses
 * (429s come only from estimates the headers have not yet corrected, or other users of the key).
 *
 * Why it holds: the model's row is one bucket (requests_level, tokens_level at levels_at). Tokens
 * leave it only as grants in leaseRatesSql, which refills the row to now, takes back what the daemon
 * returns (its unspent wallet, or a debt), and grants at most the level; a daemon starts requests
 * only from its wallet (src/domain/rate-wallet.ts), which it empties into the return at every
 * rebalance. Every change to a row happens with the row locked (lockRatesSql, inside the slot
 * rebalance's transaction, whose model_limits locks already serialise the daemons per model), and
 * leaseRatesSql reads it in a snapshot taken after the lock was granted (a second statement). A
 * dead daemon's wallet is never returned: its share is lost, never doubled.
 *
 * Pause: a daemon answered 429 with a hint calls pauseModelSql at once: paused_until moves to now +
 * hint (never earlier), the levels drop to at most zero (the upstream said nothing is left), and
 * rate_factor drops ×0.9 (at most once a second, not below 0.5) and climbs back 1% a second, so the
 * resume is gradual. Every daemon sees the pause at its next rebalance (within budgetIntervalMs);
 * while paused, grants are zero and positive returns are dropped.
 *
 * Upstream observations: a daemon passes the newest remaining requests/tokens its answers carried;
 * when newer than the last applied, the level becomes at most that remaining (the upstream's count is
 * the truth: an estimate that runs low, or another user of the key, shows there first).
 *
 * Fair share: a grant is at most the level / (peers with demand + 1) (peers as the slot rebalance
 * counted them, budget.ts), so daemons rebalancing in turn split the refill instead of the first
 * taking it all.
 *
 * Cost: two statements (lock, lease) in the slot rebalance's transaction, only for models that have
 * a row; nothing per request. Alternatives considered (the decision record has the reasoning):
 * a GCRA theoretical arrival time advanced by every claim (exact, but one global row lock per claim
 * per model, which budget.ts's design removed from the hot path); fixed per-daemon rate shares
 * (no give-back of a share a daemon cannot use until the next rebalance, and a daemon's burst
 * allowance must be split too).
 */

/** Seconds of refill a model's bucket holds by default (its largest burst). */
export const DEFAULT_RATE_BURST_SECONDS = 10;

/** Locks the rate rows of the models ($1 text[]) that have one, ORDER BY model (no deadlocks). */
export function lockRatesSql(s: string): string {
  return `
SELECT m.model FROM ${s}.model_rate_limits m
 WHERE m.model = ANY ($1::text[])
 ORDER BY m.model
   FOR UPDATE OF m`;
}

/**
 * Leases this daemon's rate budgets (after lockRatesSql, same transaction). Parallel arrays:
 * $1 text[] models, $2 float8[] requests returned, $3 float8[] tokens returned (wallets; negative is
 * a debt), $4 float8[] requests wanted, $5 float8[] tokens wanted, $6 int[] peers with demand,
 * $7 float8 burst seconds, $8 float8[] observed remaining requests (null: none), $9 float8[]
 * observed remaining tokens, $10 float8[] observation time (epoch ms).
 * Returns per model with a row: the grants, the limits in force, the pause (epoch ms, 0 if none)
 * and the levels left.
 */
export function leaseRatesSql(s: string): string {
  return `
WITH t AS MATERIALIZED (SELECT clock_timestamp() AS now),
w AS (
  SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::int[],
                       $8::float8[], $9::float8[], $10::float8[])
    AS w(model, ret_r, ret_t, want_r, want_t, peers, obs_r, obs_t, obs_ms)
),
base AS (
  SELECT w.*, coalesce(m.rpm, m.learned_rpm) AS eff_rpm, coalesce(m.tpm, m.learned_tpm) AS eff_tpm,
         m.requests_level, m.tokens_level, m.observed_ms,
         coalesce(m.paused_until > t.now, false) AS paused,
         CASE WHEN m.paused_until > t.now THEN floor(extract(epoch FROM m.paused_until) * 1000) ELSE 0 END::float8 AS paused_ms,
         CASE WHEN m.factor_at IS NULL THEN 1.0
              ELSE least(1.0, m.rate_factor + extract(epoch FROM t.now - m.factor_at)::float8 * 0.01) END AS f,
         greatest(0, extract(epoch FROM t.now - m.levels_at)::float8) / 60.0 AS el_min,
         greatest(t.now, m.levels_at) AS new_levels_at
    FROM w CROSS JOIN t JOIN ${s}.model_rate_limits m ON m.model = w.model
),
refilled AS (
  SELECT b.*,
         greatest(1, coalesce(b.eff_rpm, 0) * $7::float8 / 60.0) AS cap_r,
         greatest(1, coalesce(b.eff_tpm, 0) * $7::float8 / 60.0) AS cap_t
    FROM base b
),
leveled AS (
  SELECT r.*,
         CASE WHEN r.eff_rpm IS NULL THEN 0
              WHEN r.paused THEN least(r.cap_r, r.requests_level + r.el_min * r.eff_rpm * r.f) + least(r.ret_r, 0)
              ELSE least(r.cap_r, r.requests_level + r.el_min * r.eff_rpm * r.f + r.ret_r) END AS r2,
         CASE WHEN r.eff_tpm IS NULL THEN 0
              WHEN r.paused THEN least(r.cap_t, r.tokens_level + r.el_min * r.eff_tpm * r.f) + least(r.ret_t, 0)
              ELSE least(r.cap_t, r.tokens_level + r.el_min * r.eff_tpm * r.f + r.ret_t) END AS t2,
         (r.obs_ms IS NOT NULL AND r.obs_ms > r.observed_ms) AS fresh
    FROM refilled r
),
observed AS (
  SELECT l.*,
         CASE WHEN l.fresh AND l.obs_r IS NOT NULL THEN least(l.r2, l.obs_r) ELSE l.r2 END AS r3,
         CASE WHEN l.fresh AND l.obs_t IS NOT NULL THEN least(l.t2, l.obs_t) ELSE l.t2 END AS t3
    FROM leveled l
),
granted AS (
  SELECT o.*,
         CASE WHEN o.paused OR o.eff_rpm IS NULL THEN 0
              ELSE greatest(0, least(o.want_r, greatest(0, o.r3) / (o.peers + 1))) END AS g_r,
         CASE WHEN o.paused OR o.eff_tpm IS NULL THEN 0
              ELSE greatest(0, least(o.want_t, greatest(0, o.t3) / (o.peers + 1))) END AS g_t
    FROM observed o
),
updated AS (
  UPDATE ${s}.model_rate_limits m
     SET requests_level = g.r3 - g.g_r, tokens_level = g.t3 - g.g_t, levels_at = g.new_levels_at,
         observed_ms = CASE WHEN g.fresh THEN g.obs_ms ELSE m.observed_ms END
    FROM granted g
   WHERE m.model = g.model
)
SELECT g.model, g.g_r AS requests, g.g_t AS tokens, g.eff_rpm AS rpm, g.eff_tpm AS tpm,
       g.paused_ms, g.r3 - g.g_r AS requests_level, g.t3 - g.g_t AS tokens_level, g.f AS factor
  FROM granted g`;
}

/**
 * A 429 with the upstream's hint: pauses the model for every daemon. $1 text model, $2 float8 ms.
 * Inserts the row if the model had none (an upstream that sends retry-after but no limits).
 * Returns the pause's end as epoch ms.
 */
export function pauseModelSql(s: string): string {
  return `
INSERT INTO ${s}.model_rate_limits AS m (model, paused_until, rate_factor, factor_at)
VALUES ($1, clock_timestamp() + $2::float8 * interval '1 millisecond', 0.9, clock_timestamp())
ON CONFLICT (model) DO UPDATE SET
  paused_until   = greatest(m.paused_until, EXCLUDED.paused_until),
  requests_level = least(m.requests_level, 0),
  tokens_level   = least(m.tokens_level, 0),
  levels_at      = greatest(m.levels_at, EXCLUDED.factor_at),
  rate_factor    = CASE WHEN m.factor_at IS NULL THEN 0.9
                        WHEN m.factor_at < EXCLUDED.factor_at - interval '1 second'
                        THEN greatest(0.5, least(1.0, m.rate_factor + extract(epoch FROM EXCLUDED.factor_at - m.factor_at)::float8 * 0.01) * 0.9)
                        ELSE m.rate_factor END,
  factor_at      = CASE WHEN m.factor_at IS NULL OR m.factor_at < EXCLUDED.factor_at - interval '1 second'
                        THEN EXCLUDED.factor_at ELSE m.factor_at END,
  updated_at     = now()
RETURNING floor(extract(epoch FROM m.paused_until) * 1000)::float8 AS paused_until_ms`;
}

/**
 * Writes configured limits (daemon start, setModelRateLimits): $1 text[] models (sorted), $2 int[]
 * rpm, $3 int[] tpm (null: none configured), $4 float8 burst seconds. A new row starts full.
 */
export function configureRateLimitsSql(s: string): string {
  return `
INSERT INTO ${s}.model_rate_limits AS m (model, rpm, tpm, requests_level, tokens_level)
SELECT c.model, c.rpm, c.tpm, coalesce(c.rpm, 0) * $4::float8 / 60.0, coalesce(c.tpm, 0) * $4::float8 / 60.0
  FROM unnest($1::text[], $2::int[], $3::int[]) AS c(model, rpm, tpm)
 ORDER BY c.model
ON CONFLICT (model) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, updated_at = now()
 WHERE (m.rpm, m.tpm) IS DISTINCT FROM (EXCLUDED.rpm, EXCLUDED.tpm)`;
}

/**
 * Records limits learned from the upstream's headers: $1 text[] models (sorted), $2 int[] rpm,
 * $3 int[] tpm (null: not reported), $4 float8[] remaining requests, $5 float8[] remaining tokens
 * (null: not reported), $6 float8 burst seconds, $7 float8[] observation time (epoch ms). A new row
 * starts at what the upstream reported left (at most its capacity).
 */
export function learnRateLimitsSql(s: string): string {
  return `
INSERT INTO ${s}.model_rate_limits AS m (model, learned_rpm, learned_tpm, requests_level, tokens_level, observed_ms)
SELECT l.model, l.rpm, l.tpm,
       least(coalesce(l.rpm, 0) * $6::float8 / 60.0, coalesce(l.obs_r, l.rpm, 0)),
       least(coalesce(l.tpm, 0) * $6::float8 / 60.0, coalesce(l.obs_t, l.tpm, 0)),
       coalesce(l.obs_ms, 0)
  FROM unnest($1::text[], $2::int[], $3::int[], $4::float8[], $5::float8[], $7::float8[])
    AS l(model, rpm, tpm, obs_r, obs_t, obs_ms)
 ORDER BY l.model
ON CONFLICT (model) DO UPDATE SET
  learned_rpm = coalesce(EXCLUDED.learned_rpm, m.learned_rpm),
  learned_tpm = coalesce(EXCLUDED.learned_tpm, m.learned_tpm),
  updated_at  = now()
 WHERE (m.learned_rpm, m.learned_tpm) IS DISTINCT FROM
       (coalesce(EXCLUDED.learned_rpm, m.learned_rpm), coalesce(EXCLUDED.learned_tpm, m.learned_tpm))`;
}

/**
 * Publishes what this daemon started of each model in the last minute and its adaptive concurrency
 * (migration 0014), inside the slot rebalance's transaction: $1 uuid daemon, $2 text[] models
 * (sorted), $3 int[] requests, $4 int8[] tokens (estimates), $5 int[] adaptive concurrency (null:
 * not adaptive). One row per daemon and model: no other daemon writes it, so it never waits; rows
 * of daemons silent for an hour are deleted on the way.
 */
export function publishRateUsageSql(s: string): string {
  return `
WITH gone AS (
  -- Rows of daemons gone for an hour (a live one writes its rows every second): the table stays as
  -- small as the fleet. SKIP LOCKED: two daemons clearing at once never wait on each other.
  DELETE FROM ${s}.model_rate_usage g
   WHERE (g.model, g.daemon_id) IN (
     SELECT o.model, o.daemon_id FROM ${s}.model_rate_usage o
      WHERE o.updated_at < now() - interval '1 hour' AND o.daemon_id <> $1::uuid
        FOR UPDATE SKIP LOCKED)
)
INSERT INTO ${s}.model_rate_usage AS u (model, daemon_id, requests_per_minute, tokens_per_minute, adaptive_concurrency)
SELECT p.model, $1::uuid, p.requests, p.tokens, p.adaptive
  FROM unnest($2::text[], $3::int[], $4::int8[], $5::int[]) AS p(model, requests, tokens, adaptive)
ON CONFLICT (model, daemon_id) DO UPDATE SET
  requests_per_minute = EXCLUDED.requests_per_minute, tokens_per_minute = EXCLUDED.tokens_per_minute,
  adaptive_concurrency = EXCLUDED.adaptive_concurrency, updated_at = now()`;
}

/**
 * Every model's rate state, refilled to now (dashboard, metrics), with what the live daemons started
 * of it in the last minute and their adaptive concurrency (summed; published within the last minute).
 * A model with usage but no rate row (adaptive concurrency only) is listed with null limits. No
 * locks. paused_until_ms is 0 when not paused.
 */
export function rateStatusSql(s: string): string {
  return `
SELECT coalesce(m.model, u.model) AS model, m.rpm, m.tpm, m.learned_rpm, m.learned_tpm,
       coalesce(m.rpm, m.learned_rpm) AS rpm_in_force, coalesce(m.tpm, m.learned_tpm) AS tpm_in_force,
       CASE WHEN m.paused_until > now() THEN floor(extract(epoch FROM m.paused_until) * 1000) ELSE 0 END::float8 AS paused_until_ms,
       CASE WHEN m.factor_at IS NULL THEN 1.0
            ELSE least(1.0, m.rate_factor + extract(epoch FROM now() - m.factor_at)::float8 * 0.01) END AS factor,
       coalesce(u.requests, 0)::int AS requests_per_minute, coalesce(u.tokens, 0)::float8 AS tokens_per_minute,
       u.adaptive::int AS adaptive_concurrency
  FROM ${s}.model_rate_limits m
  FULL JOIN (
    SELECT ru.model, sum(ru.requests_per_minute) AS requests, sum(ru.tokens_per_minute) AS tokens,
           sum(ru.adaptive_concurrency) AS adaptive
      FROM ${s}.model_rate_usage ru JOIN ${s}.daemons d ON d.id = ru.daemon_id AND d.stopped_at IS NULL
     WHERE ru.updated_at > now() - interval '1 minute'
     GROUP BY ru.model
  ) u ON u.model = m.model
 ORDER BY 1`;
}

/**
 * When a batch ($1 uuid) waits for a rate limit: the latest end (epoch ms) of the pauses of its
 * models, or null when none is paused (`fusillade run`'s progress line).
 */
export function batchRatePauseSql(s: string): string {
  return `
SELECT floor(extract(epoch FROM max(m.paused_until)) * 1000)::float8 AS until_ms
  FROM ${s}.batch_models bm JOIN ${s}.model_rate_limits m ON m.model = bm.model
 WHERE bm.batch_id = $1 AND m.paused_until > now()`;
}
