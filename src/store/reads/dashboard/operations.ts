import type pg from 'pg';
import { rateStatusSql } from '../../../db/sql/queue/rate-budget.js';
import { liveBatchSql } from '../../../domain/batch-lifecycle.js';
import { SETTLE_SECONDS, type SendsMemory } from './sends-memory.js';

/**
 * The operators' view for one owner: load per model against limits, recent dispatch rate, daemons
 * and queue depth. In flight is read through the partial requests_inflight_idx, rates through
 * requests_completed_at_idx; the waiting rows of live batches are counted from the claim's index
 * without their heap (linear in the backlog's index entries: bench/big-database.ts).
 */

export interface ModelLoad {
  model: string;
  inFlight: number;
  /** The limit that holds across all daemons: model_limits, else the configured default. */
  limit: number;
  /**
   * Pending requests of live batches (waiting or backing off), without the followers of a coalesced
   * line (they are never sent: their leader's outcome is copied to them).
   */
  pending: number;
  /** Requests/tokens-per-minute state (issue 11), or null when the model has none. */
  rate: ModelRate | null;
}

/** A model's rate limits in force and what the live daemons started of it in the last minute. */
export interface ModelRate {
  /** Requests and tokens per minute in force (configured, else learned), or null for none. */
  rpm: number | null;
  tpm: number | null;
  /** Whether the limits in force were configured or learned from the upstream's headers. */
  source: 'configured' | 'learned' | null;
  /** Started in the last minute by the live daemons (tokens: their estimates). */
  requestsPerMinute: number;
  tokensPerMinute: number;
  /** The model is paused after a 429 until then, or null. */
  pausedUntil: Date | null;
  /** The live daemons' adaptive concurrency, summed; null when the model is not adaptive. */
  adaptiveConcurrency: number | null;
}

export interface DaemonSummary {
  id: string;
  host: string;
  pid: number;
  version: string | null;
  startedAt: Date;
  heartbeatAt: Date;
  stoppedAt: Date | null;
  /** alive: heartbeat within the dead-daemon limit; stale: silent longer (its work is reclaimed). */
  health: 'alive' | 'stale' | 'stopped';
  inFlight: number;
}

export interface Operations {
  models: ModelLoad[];
  /** Requests sent per bucket and model over the recent window, oldest bucket first. */
  dispatch: { start: Date; bucketSeconds: number; series: { model: string; counts: number[] }[] };
  daemons: DaemonSummary[];
  queue: { pending: number; ready: number; inFlight: number; liveBatches: number };
}

export interface OperationsOptions {
  /**
   * Whose activity to count: per-model in flight and pending, dispatch, each daemon's in-flight
   * count and the queue are this owner's batches only (null = every owner, for library callers and
   * operators). Daemons themselves and model limits are infrastructure and shown to everyone, but a
   * model is listed only if it is the owner's or configured (`configuredModels`): model_limits is
   * also seeded from every owner's work, and a model's name can be a tenant's (a fine-tune's).
   */
  owner?: string | null;
  /** Models this server is configured for (their limits are shown to every owner). */
  configuredModels?: string[];
  defaultModelConcurrency: number;
  deadDaemonAfterMs: number;
  /**
   * What earlier polls read of the sends in the window (sends-memory.ts): given, a poll reads only
   * the rows finished since the previous poll of the same owner; without, the whole window.
   */
  sends?: SendsMemory;
  /** Dispatch-rate window, default 15 minutes in 30 s buckets. */
  windowSeconds?: number;
  bucketSeconds?: number;
}

/** Live batches (src/domain/batch-lifecycle.ts). */
const LIVE_B = liveBatchSql('b');

/** `b` belongs to the owner in $1 (any owner when $1 is null). */
const OWNED_B = `($1::text IS NULL OR b.owner = $1)`;

/** The request `r` belongs to a batch of the owner in $1 (any owner when $1 is null). */
const OWNED_R = `($1::text IS NULL OR EXISTS (SELECT 1 FROM %s.batches ob WHERE ob.id = r.batch_id AND ob.owner = $1))`;

/**
 * The operators' view: load per model, recent dispatch rate, daemons and queue depth, scoped to
 * one owner's batches (see OperationsOptions.owner).
 */
export async function operations(pool: pg.Pool, s: string, options: OperationsOptions): Promise<Operations> {
  const bucketSeconds = options.bucketSeconds ?? 30;
  const buckets = Math.ceil((options.windowSeconds ?? 900) / bucketSeconds);
  const owner = options.owner ?? null;
  const ownedR = OWNED_R.replace('%s', s);
  const [load, dispatch, daemons, queue, clock, rates] = await Promise.all([
    // In flight through the partial in-flight index. Waiting: each live batch's claimable rows
    // counted per model from the claim's own index (requests_pending_route_idx, index-only: model is
    // in its key, state and coalesced_into in its predicate), and the ones backing off from
    // requests_backoff_idx (only rows a retry put back with a not_before), so no pending row's heap is
    // read. The join it replaces read every pending row's heap for not_before: 68,936 rows, 11,515
    // buffers, 215 ms at load 15 (issue 14). Followers of a coalesced line are not counted: they are
    // never sent (their leader's outcome is copied to them).
    pool.query<{
      model: string;
      in_flight: number;
      pending: number;
      ready: number;
      concurrency: number | null;
    }>(
      `WITH inflight AS (
         SELECT r.model, count(*)::int AS n FROM ${s}.requests r
          WHERE r.state IN ('claimed', 'processing') AND ${ownedR}
          GROUP BY r.model
       ), live AS (
         SELECT b.id FROM ${s}.batches b WHERE ${LIVE_B} AND ${OWNED_B}
       ), waiting AS (
         SELECT p.model, sum(p.n)::int AS pending
           FROM live b, LATERAL (SELECT r.model, count(*) AS n FROM ${s}.requests r
                                  WHERE r.batch_id = b.id AND r.state = 'pending' AND r.coalesced_into IS NULL
                                  GROUP BY r.model OFFSET 0) p
          GROUP BY p.model
       ), backing_off AS (
         SELECT r.model, count(*)::int AS n FROM ${s}.requests r
          WHERE r.state = 'pending' AND r.not_before > now() AND r.coalesced_into IS NULL
            AND r.batch_id IN (SELECT id FROM live)
          GROUP BY r.model
       ), models AS (
         SELECT model FROM inflight UNION SELECT model FROM waiting
         UNION
         SELECT model FROM ${s}.model_limits WHERE $1::text IS NULL OR model = ANY($2::text[])
         UNION
         -- The owner's models of batches live or ended within the dispatch window (as the chart's).
         SELECT bm.model FROM ${s}.batches b JOIN ${s}.batch_models bm ON bm.batch_id = b.id
          WHERE $1::text IS NOT NULL AND b.owner = $1 AND b.deleted_at IS NULL
            AND (b.finished_at IS NULL OR b.finished_at >= now() - make_interval(secs => $3::int))
       )
       SELECT m.model, coalesce(i.n, 0) AS in_flight, coalesce(w.pending, 0) AS pending,
              greatest(0, coalesce(w.pending, 0) - coalesce(o.n, 0)) AS ready, l.concurrency
         FROM models m LEFT JOIN inflight i USING (model) LEFT JOIN waiting w USING (model)
         LEFT JOIN backing_off o USING (model) LEFT JOIN ${s}.model_limits l USING (model)
        ORDER BY m.model`,
      [owner, options.configuredModels ?? [], buckets * bucketSeconds],
    ),
    options.sends
      ? options.sends.poll(owner, (scope) =>
          sendsSince(pool, s, owner, buckets, bucketSeconds, scope.fromMs).then((r) => {
            const instants = r.find((x) => x.model === null)!;
            const read = r.filter((x): x is SendRow & { model: string } => x.model !== null);
            const rows: { model: string; i: number; n: number }[] = read.filter((x) => !x.settled);
            const kept = scope.keep(
              read.filter((x) => x.settled),
              instants.settle_ms,
              instants.since_ms,
            );
            const bucketMs = bucketSeconds * 1000;
            for (const [model, perSecond] of kept) {
              for (const [second, n] of perSecond) {
                const i = Math.max(0, Math.floor((second * 1000 - instants.since_ms) / bucketMs));
                rows.push({ model, i, n });
              }
            }
            return { rows };
          }),
        )
      : sendsInWindow(pool, s, owner, buckets, bucketSeconds),
    // Every daemon (infrastructure: host, pid, version, health), but only the owner's requests in
    // its in-flight count.
    pool.query<{
      id: string;
      host: string;
      pid: number;
      version: string | null;
      started_at: Date;
      heartbeat_at: Date;
      stopped_at: Date | null;
      stale: boolean;
      in_flight: number;
    }>(
      `SELECT d.id, d.host, d.pid, d.version, d.started_at, d.heartbeat_at, d.stopped_at,
              d.heartbeat_at < now() - make_interval(secs => $2::float8 / 1000) AS stale,
              (SELECT count(*)::int FROM ${s}.requests r
                WHERE r.daemon_id = d.id AND r.state IN ('claimed', 'processing') AND ${ownedR}) AS in_flight
         FROM ${s}.daemons d
        WHERE d.stopped_at IS NULL OR d.stopped_at > now() - interval '1 hour'
        ORDER BY d.stopped_at IS NOT NULL, d.started_at DESC
        LIMIT 50`,
      [owner, options.deadDaemonAfterMs],
    ),
    pool.query<{ live: number }>(
      `SELECT count(*)::int AS live FROM ${s}.batches b WHERE ${LIVE_B} AND ${OWNED_B}`,
      [owner],
    ),
    pool.query<{ t: Date }>(`SELECT now() - make_interval(secs => $1::int * $2::int) AS t`, [
      buckets,
      bucketSeconds,
    ]),
    // Rate state is infrastructure, like model_limits: shown for the models listed above.
    pool.query<{
      model: string;
      rpm: number | null;
      tpm: number | null;
      rpm_in_force: number | null;
      tpm_in_force: number | null;
      paused_until_ms: number;
      requests_per_minute: number;
      tokens_per_minute: number;
      adaptive_concurrency: number | null;
    }>(rateStatusSql(s)),
  ]);
  const rateOf = new Map(
    rates.rows.map((r): [string, ModelRate] => [
      r.model,
      {
        rpm: r.rpm_in_force,
        tpm: r.tpm_in_force,
        source:
          r.rpm !== null || r.tpm !== null
            ? 'configured'
            : r.rpm_in_force !== null || r.tpm_in_force !== null
              ? 'learned'
              : null,
        requestsPerMinute: r.requests_per_minute,
        tokensPerMinute: r.tokens_per_minute,
        pausedUntil: r.paused_until_ms > 0 ? new Date(r.paused_until_ms) : null,
        adaptiveConcurrency: r.adaptive_concurrency,
      },
    ]),
  );
  const series = new Map<string, number[]>();
  for (const r of dispatch.rows) {
    if (r.i < 0 || r.i >= buckets) continue;
    let counts = series.get(r.model);
    if (!counts) {
      counts = new Array(buckets).fill(0);
      series.set(r.model, counts);
    }
    counts[r.i] = (counts[r.i] ?? 0) + r.n;
  }
  const sum = (f: (r: (typeof load.rows)[number]) => number) => load.rows.reduce((n, r) => n + f(r), 0);
  return {
    models: load.rows.map((r) => ({
      model: r.model,
      inFlight: r.in_flight,
      pending: r.pending,
      limit: r.concurrency ?? options.defaultModelConcurrency,
      rate: rateOf.get(r.model) ?? null,
    })),
    dispatch: {
      start: clock.rows[0]!.t,
      bucketSeconds,
      series: [...series]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([model, counts]) => ({ model, counts })),
    },
    daemons: daemons.rows.map((d) => ({
      id: d.id,
      host: d.host,
      pid: d.pid,
      version: d.version,
      startedAt: d.started_at,
      heartbeatAt: d.heartbeat_at,
      stoppedAt: d.stopped_at,
      health: d.stopped_at ? 'stopped' : d.stale ? 'stale' : 'alive',
      inFlight: d.in_flight,
    })),
    queue: {
      pending: sum((r) => r.pending),
      ready: sum((r) => r.ready),
      inFlight: sum((r) => r.in_flight),
      liveBatches: queue.rows[0]!.live,
    },
  };
}

/**
 * Sends in the window: rows that finished since (completed_at index per recent batch) or are in
 * flight. A row sent and then requeued for a retry is counted again when its next attempt is.
 * The LATERAL subquery (OFFSET 0 keeps the planner from flattening it into a join) reads each
 * recent batch's rows through requests_completed_at_idx (batch_id, completed_at): bounded by the
 * rows finished in the window, whatever plan the statistics suggest. The join it replaced
 * scanned the whole requests table at 2M finished rows: 2,965 ms, the LATERAL form 0.73 ms
 * (issue 14); with fresh statistics at 500k finished rows + 2k recent: 9.6 ms against 5.7 ms
 * (medians of 7).
 */
function sendsInWindow(
  pool: pg.Pool,
  s: string,
  owner: string | null,
  buckets: number,
  bucketSeconds: number,
) {
  const ownedR = OWNED_R.replace('%s', s);
  return pool.query<{ model: string; i: number; n: number }>(
    `WITH since AS (SELECT now() - make_interval(secs => $2::int * $3::int) AS t),
     recent AS (
       SELECT b.id FROM ${s}.batches b, since
        WHERE b.deleted_at IS NULL AND (b.finished_at IS NULL OR b.finished_at >= since.t) AND ${OWNED_B}
     ), sent AS (
       SELECT r.model, r.started_at FROM recent b, since,
              LATERAL (SELECT x.model, x.started_at FROM ${s}.requests x
                        WHERE x.batch_id = b.id AND x.completed_at >= since.t OFFSET 0) r
        WHERE r.started_at >= since.t
       UNION ALL
       SELECT r.model, r.started_at FROM ${s}.requests r, since
        WHERE r.state = 'processing' AND r.started_at >= since.t AND ${ownedR}
     )
     SELECT model, floor(extract(epoch FROM (started_at - since.t)) / $3)::int AS i, count(*)::int AS n
       FROM sent, since GROUP BY 1, 2`,
    [owner, buckets, bucketSeconds],
  );
}

interface SendRow {
  /** null: the row that carries only the instants (since_ms, settle_ms). */
  model: string | null;
  settled: boolean;
  /** Epoch second sent (settled rows). */
  second: number;
  i: number;
  n: number;
  since_ms: number;
  settle_ms: number;
}

/**
 * Sends in the window read from `fromMs` (epoch ms; null: the window's start) on, as
 * sendsInWindow: per model, second sent and bucket, whether finished before the settle margin
 * (sends-memory.ts), and a row of no model with the window's start and the margin (database time).
 */
async function sendsSince(
  pool: pg.Pool,
  s: string,
  owner: string | null,
  buckets: number,
  bucketSeconds: number,
  fromMs: number | null,
): Promise<SendRow[]> {
  const ownedR = OWNED_R.replace('%s', s);
  const { rows } = await pool.query<SendRow>(
    `WITH since AS (
       SELECT now() - make_interval(secs => $2::int * $3::int) AS t, now() - make_interval(secs => $5::int) AS settle
     ), since_f AS (
       SELECT greatest(since.t, coalesce(to_timestamp($4::float8 / 1000), since.t)) AS f FROM since
     ), recent AS (
       SELECT b.id FROM ${s}.batches b, since_f
        WHERE b.deleted_at IS NULL AND (b.finished_at IS NULL OR b.finished_at >= since_f.f) AND ${OWNED_B}
     ), sent AS (
       SELECT r.model, r.started_at, r.completed_at < since.settle AS settled FROM recent b, since, since_f,
              LATERAL (SELECT x.model, x.started_at, x.completed_at FROM ${s}.requests x
                        WHERE x.batch_id = b.id AND x.completed_at >= since_f.f OFFSET 0) r
        WHERE r.started_at >= since.t
       UNION ALL
       SELECT r.model, r.started_at, false FROM ${s}.requests r, since
        WHERE r.state = 'processing' AND r.started_at >= since.t AND ${ownedR}
     )
     SELECT * FROM (
       SELECT model, settled, floor(extract(epoch FROM started_at))::float8 AS second,
              floor(extract(epoch FROM (started_at - since.t)) / $3)::int AS i, count(*)::int AS n,
              NULL::float8 AS since_ms, NULL::float8 AS settle_ms
         FROM sent, since GROUP BY 1, 2, 3, 4
     ) got
     UNION ALL
     SELECT NULL, NULL, NULL, NULL, 0, (extract(epoch FROM since.t) * 1000)::float8,
            (extract(epoch FROM since.settle) * 1000)::float8
       FROM since`,
    [owner, buckets, bucketSeconds, fromMs, SETTLE_SECONDS],
  );
  return rows;
}
