import type pg from 'pg';
import { BATCH_STATUSES, type BatchLifecycleStatus } from '../domain/batch-status.js';
import { NotFoundError } from '../domain/errors.js';
import { REQUEST_STATES, type RequestState } from '../domain/request-state.js';
import type { BatchInfo, BatchStatus } from '../domain/types.js';
import { statusesOf } from './batches.js';
import { assertId, BATCH_COLUMNS, type BatchRow, isUuid, toBatchInfo } from './rows.js';

/**
 * Read queries of the web dashboard beyond the library API. Every query is scoped to the owner
 * (null = all owners, for library callers); of the operations data only the daemons and the
 * configured models' limits are shown to every owner, with no other owner's activity in them.
 * Each query is bounded by the number of batches, not the backlog (REFERENCE §4 lessons 4 and 5):
 * rates and charts read requests through requests_completed_at_idx (batch_id, completed_at) and
 * in-flight rows through the partial requests_inflight_idx.
 *
 * Measured by bench/dashboard-queries.ts (2 cores shared, one live batch of 200k requests with 20k
 * finished, p50 / p95 ms): batches page 126 / 161 (counting the live batch by state, as
 * getBatchStatus does), request page 2.4 / 8.2, failed filter 4.1 / 17, pending filter 29 / 68,
 * custom_id search 294 / 380 (was 1,040 when every request was joined to its template first),
 * throughput 8 / 16, operations 187 / 278 (one pass over the pending rows; two passes took 342).
 */

/**
 * The lifecycle status as SQL, mirroring batchLifecycleStatus() so lists can filter on it: past its
 * deadline a batch reads finalizing until it has ended, then expired.
 */
const STATUS_SQL = `CASE
  WHEN b.failed_at IS NOT NULL THEN 'failed'
  WHEN b.cancelled_at IS NOT NULL THEN 'cancelled'
  WHEN b.cancelling_at IS NOT NULL THEN 'cancelling'
  WHEN b.expired_at IS NOT NULL THEN 'expired'
  WHEN b.completed_at IS NOT NULL THEN 'completed'
  WHEN b.finalizing_at IS NOT NULL THEN 'finalizing'
  WHEN b.in_progress_at IS NULL THEN 'validating'
  WHEN b.expires_at <= now() THEN 'finalizing'
  ELSE 'in_progress' END`;

export function isBatchStatus(s: string): s is BatchLifecycleStatus {
  return (BATCH_STATUSES as readonly string[]).includes(s);
}

export function isRequestState(s: string): s is RequestState {
  return (REQUEST_STATES as readonly string[]).includes(s);
}

/** Window over which a live batch's current rate is measured. */
const RATE_WINDOW_SECONDS = 60;

export interface BatchOverview {
  batch: BatchInfo;
  progress: BatchStatus;
  /** Requests finished (completed or failed) per second over the last minute; null once ended. */
  recentRate: number | null;
}

export interface ListBatchOverviewsOptions {
  owner: string | null;
  status?: BatchLifecycleStatus;
  /** Matches the start of the batch id (with or without `batch_`), or any metadata key or value. */
  search?: string;
  /** Keyset: the id of the last batch of the previous page. */
  after?: string;
  limit?: number;
}

/** An owner's batches, newest first, with progress counts and current rate, one page at a time. */
export async function listBatchOverviews(
  pool: pg.Pool,
  s: string,
  options: ListBatchOverviewsOptions,
): Promise<{ data: BatchOverview[]; hasMore: boolean }> {
  const limit = Math.min(Math.max(options.limit ?? 20, 1), 100);
  const after = options.after !== undefined && isUuid(options.after) ? options.after : null;
  const search = options.search?.trim() || null;
  // An id prefix is compared without dashes, so "batch_0a1b…" and "0a1b…-…" both match.
  const idPrefix = search
    ? search
        .replace(/^batch_/i, '')
        .replace(/-/g, '')
        .toLowerCase()
    : null;
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches b
      WHERE b.deleted_at IS NULL AND ($1::text IS NULL OR b.owner = $1)
        AND ($2::text IS NULL OR ${STATUS_SQL} = $2)
        AND ($3::text IS NULL
             OR (length($4) > 0 AND $4 ~ '^[0-9a-f]+$' AND replace(b.id::text, '-', '') LIKE $4 || '%')
             OR EXISTS (SELECT 1 FROM jsonb_each_text(coalesce(b.metadata, '{}'::jsonb)) m
                         WHERE strpos(lower(m.key), lower($3)) > 0 OR strpos(lower(m.value), lower($3)) > 0))
        AND ($5::uuid IS NULL OR (b.created_at, b.id) < (SELECT created_at, id FROM ${s}.batches WHERE id = $5))
      ORDER BY b.created_at DESC, b.id DESC
      LIMIT $6`,
    [options.owner, options.status ?? null, search, idPrefix ?? '', after, limit + 1],
  );
  const page = rows.slice(0, limit);
  const [progress, rates] = await Promise.all([
    statusesOf(pool, s, page),
    recentRates(
      pool,
      s,
      page.filter((r) => r.finished_at === null).map((r) => r.id),
    ),
  ]);
  const now = new Date();
  return {
    data: page.map((row, i) => ({
      batch: toBatchInfo(row, now),
      progress: progress[i]!,
      recentRate: row.finished_at === null ? (rates.get(row.id) ?? 0) : null,
    })),
    hasMore: rows.length > limit,
  };
}

/** Requests finished per second over the last minute by one batch. */
export async function recentRate(pool: pg.Pool, s: string, batchId: string): Promise<number> {
  return (await recentRates(pool, s, [batchId])).get(batchId) ?? 0;
}

/**
 * Requests finished per second over the last minute, or since the batch started when that is
 * more recent (a young batch's rate would otherwise read far too low and its ETA far too long).
 */
async function recentRates(pool: pg.Pool, s: string, ids: string[]): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map();
  const { rows } = await pool.query<{ id: string; n: number; window_seconds: number }>(
    `SELECT b.id, count(r.id)::int AS n,
            greatest(1, least($2, extract(epoch FROM now() - coalesce(b.in_progress_at, b.created_at))))::float8
              AS window_seconds
       FROM ${s}.batches b
       LEFT JOIN ${s}.requests r ON r.batch_id = b.id AND r.completed_at >= now() - make_interval(secs => $2)
                                AND r.state IN ('completed', 'failed')
      WHERE b.id = ANY($1::uuid[])
      GROUP BY b.id`,
    [ids, RATE_WINDOW_SECONDS],
  );
  return new Map(rows.map((r) => [r.id, r.n / r.window_seconds]));
}

/** Fails with NotFoundError unless the batch exists and belongs to the owner. */
async function batchRowOf(
  pool: pg.Pool,
  s: string,
  batchId: string,
  owner: string | null,
): Promise<BatchRow> {
  assertId('batch', batchId);
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches
      WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)`,
    [batchId, owner],
  );
  if (!rows[0]) throw new NotFoundError('batch', batchId);
  return rows[0];
}

export interface RequestSummary {
  id: string;
  lineNumber: number;
  customId: string | null;
  model: string;
  state: RequestState;
  attempt: number;
  statusCode: number | null;
  errorCode: string | null;
  /** Last attempt's duration, from being sent to its outcome. */
  latencyMs: number | null;
  completedAt: Date | null;
}

/** A request_view row (with its template's custom_id and a latency_ms column) as a table row. */
function toRequestSummary(r: {
  id: string;
  line_number: number;
  custom_id: string | null;
  model: string;
  effective_state: RequestState;
  attempt: number;
  response_status: number | null;
  effective_error_code: string | null;
  latency_ms: number | null;
  completed_at: Date | null;
}): RequestSummary {
  return {
    id: r.id,
    lineNumber: r.line_number,
    customId: r.custom_id,
    model: r.model,
    state: r.effective_state,
    attempt: r.attempt,
    statusCode: r.response_status,
    errorCode: r.effective_error_code,
    latencyMs: r.latency_ms === null ? null : Math.round(r.latency_ms),
    completedAt: r.completed_at,
  };
}

export interface ListRequestSummariesOptions {
  owner: string | null;
  state?: RequestState;
  /** Only requests whose custom_id contains this text. */
  search?: string;
  /** Keyset: the line number of the last request of the previous page. */
  afterLine?: number;
  limit?: number;
}

/** One page of a batch's requests in input order, without bodies (the table of the detail page). */
export async function listRequestSummaries(
  pool: pg.Pool,
  s: string,
  batchId: string,
  options: ListRequestSummariesOptions,
): Promise<{ data: RequestSummary[]; hasMore: boolean }> {
  const batch = await batchRowOf(pool, s, batchId, options.owner);
  const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
  const search = options.search || null;
  // Pending and canceled are read through the batch (a cancel rewrites no rows); any other state is
  // stored as shown, so the filter can also go through requests_batch_state_idx instead of a walk of
  // the whole batch in line order.
  const stored = options.state !== undefined && options.state !== 'pending' && options.state !== 'canceled';
  // A custom_id search reads the file's templates once and joins only the matches by line (joining
  // every request to its template first took 1.7 s for a 100k-request batch); without one, the
  // CTE is inlined and the walk in line order stops at the page's end.
  const templates = `WITH templates AS ${search === null ? 'NOT MATERIALIZED' : 'MATERIALIZED'} (
       SELECT line_number, custom_id FROM ${s}.request_templates
        WHERE file_id = $6 AND line_number > $4 AND ($3::text IS NULL OR strpos(custom_id, $3) > 0)
     )`;
  const { rows } = await pool.query<{
    id: string;
    line_number: number;
    custom_id: string | null;
    model: string;
    effective_state: RequestState;
    attempt: number;
    response_status: number | null;
    effective_error_code: string | null;
    latency_ms: number | null;
    completed_at: Date | null;
  }>(
    `${templates}
     SELECT r.id, r.line_number, t.custom_id, r.model, r.effective_state, r.attempt, r.response_status,
            r.effective_error_code, r.completed_at,
            (extract(epoch FROM (coalesce(r.completed_at, CASE WHEN r.state = 'processing' THEN now() END)
                                 - r.started_at)) * 1000)::float8 AS latency_ms
       FROM templates t JOIN ${s}.request_view r ON r.batch_id = $1 AND r.line_number = t.line_number
      WHERE ($2::text IS NULL OR r.effective_state = $2) ${stored ? 'AND r.state = $2' : ''}
        AND r.line_number > $4
      ORDER BY r.line_number
      LIMIT $5`,
    [batchId, options.state ?? null, search, options.afterLine ?? 0, limit + 1, batch.file_id],
  );
  return {
    data: rows.slice(0, limit).map(toRequestSummary),
    hasMore: rows.length > limit,
  };
}

export interface RequestDetail extends RequestSummary {
  method: string;
  path: string;
  /** The request body exactly as submitted. */
  body: string;
  responseBody: string | null;
  errorMessage: string | null;
  upstreamRequestId: string | null;
  createdAt: Date;
  startedAt: Date | null;
  notBefore: Date | null;
}

/** One request with its body, response and error; the template's upstream key is never read. */
export async function getRequestDetail(
  pool: pg.Pool,
  s: string,
  batchId: string,
  requestId: string,
  owner: string | null,
): Promise<RequestDetail> {
  await batchRowOf(pool, s, batchId, owner);
  assertId('request', requestId);
  const { rows } = await pool.query(
    `SELECT r.id, r.line_number, t.custom_id, r.model, r.effective_state, r.attempt, r.response_status,
            r.effective_error_code, r.error_message, r.completed_at, r.created_at, r.started_at, r.not_before,
            r.response_body, r.upstream_request_id, t.method, t.path, t.body,
            (extract(epoch FROM (r.completed_at - r.started_at)) * 1000)::float8 AS latency_ms
       FROM ${s}.request_view r JOIN ${s}.request_templates t ON t.id = r.template_id
      WHERE r.batch_id = $1 AND r.id = $2`,
    [batchId, requestId],
  );
  const r = rows[0];
  if (!r) throw new NotFoundError('request', requestId);
  const cancelMessages: Record<string, string> = {
    batch_cancelled: 'The batch was cancelled before this request was sent.',
    batch_expired: 'This request could not be executed before the completion window expired.',
  };
  return {
    ...toRequestSummary(r),
    errorMessage: r.error_message ?? cancelMessages[r.effective_error_code] ?? null,
    createdAt: r.created_at,
    startedAt: r.started_at,
    notBefore: r.not_before,
    method: r.method,
    path: r.path,
    body: r.body,
    responseBody: r.response_body,
    upstreamRequestId: r.upstream_request_id,
  };
}

export interface Throughput {
  /** Start of the first bucket. */
  start: Date;
  bucketSeconds: number;
  /** Per bucket, in time order, including empty buckets. */
  buckets: { completed: number; failed: number }[];
}

/** Buckets are sized so that a chart has at most this many bars. */
const MAX_BUCKETS = 90;
const BUCKET_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

export function bucketSecondsFor(spanSeconds: number, maxBuckets = MAX_BUCKETS): number {
  const wanted = spanSeconds / maxBuckets;
  return BUCKET_STEPS.find((step) => step >= wanted) ?? Math.ceil(wanted / 86400) * 86400;
}

/** Requests finished per time bucket from the batch's start until it ended (or now). */
export async function batchThroughput(
  pool: pg.Pool,
  s: string,
  batchId: string,
  owner: string | null,
): Promise<Throughput> {
  const row = await batchRowOf(pool, s, batchId, owner);
  const start = row.in_progress_at ?? row.created_at;
  const end = row.finished_at ?? new Date();
  const bucketSeconds = bucketSecondsFor(Math.max(1, (end.getTime() - start.getTime()) / 1000));
  const { rows } = await pool.query<{ i: number; completed: number; failed: number }>(
    `SELECT floor(extract(epoch FROM (completed_at - $2::timestamptz)) / $3)::int AS i,
            count(*) FILTER (WHERE state = 'completed')::int AS completed,
            count(*) FILTER (WHERE state = 'failed')::int AS failed
       FROM ${s}.requests
      WHERE batch_id = $1 AND completed_at IS NOT NULL AND completed_at >= $2
      GROUP BY 1 ORDER BY 1`,
    [batchId, start, bucketSeconds],
  );
  const count = Math.max(1, Math.floor((end.getTime() - start.getTime()) / 1000 / bucketSeconds) + 1);
  const buckets = Array.from({ length: Math.max(count, (rows.at(-1)?.i ?? -1) + 1) }, () => ({
    completed: 0,
    failed: 0,
  }));
  for (const r of rows) buckets[r.i] = { completed: r.completed, failed: r.failed };
  return { start, bucketSeconds, buckets };
}

export interface ModelLoad {
  model: string;
  inFlight: number;
  /** The limit that holds across all daemons: model_limits, else the configured default. */
  limit: number;
  /** Pending requests of live batches (waiting or backing off). */
  pending: number;
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
  /** Dispatch-rate window, default 15 minutes in 30 s buckets. */
  windowSeconds?: number;
  bucketSeconds?: number;
}

/** Live batches: not ended, not cancelled, not deleted, deadline ahead or none (as batches_live_idx). */
const LIVE_B = `b.finished_at IS NULL AND b.cancelling_at IS NULL AND b.deleted_at IS NULL
  AND (b.expires_at IS NULL OR b.expires_at > now())`;

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
  const [load, dispatch, daemons, queue, clock] = await Promise.all([
    // In flight through the partial in-flight index; waiting rows of live batches in one pass (the
    // queue's totals are their sums): the most expensive read here, linear in the backlog.
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
       ), waiting AS (
         SELECT r.model, count(*)::int AS pending,
                count(*) FILTER (WHERE r.not_before IS NULL OR r.not_before <= now())::int AS ready
           FROM ${s}.batches b JOIN ${s}.requests r ON r.batch_id = b.id AND r.state = 'pending'
          WHERE ${LIVE_B} AND ${OWNED_B}
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
              coalesce(w.ready, 0) AS ready, l.concurrency
         FROM models m LEFT JOIN inflight i USING (model) LEFT JOIN waiting w USING (model)
         LEFT JOIN ${s}.model_limits l USING (model)
        ORDER BY m.model`,
      [owner, options.configuredModels ?? [], buckets * bucketSeconds],
    ),
    // Sends in the window: rows that finished since (completed_at index per recent batch) or are in
    // flight. A row sent and then requeued for a retry is counted again when its next attempt is.
    pool.query<{ model: string; i: number; n: number }>(
      `WITH since AS (SELECT now() - make_interval(secs => $2::int * $3::int) AS t),
       recent AS (
         SELECT b.id FROM ${s}.batches b, since
          WHERE b.deleted_at IS NULL AND (b.finished_at IS NULL OR b.finished_at >= since.t) AND ${OWNED_B}
       ), sent AS (
         SELECT r.model, r.started_at FROM recent b JOIN ${s}.requests r ON r.batch_id = b.id, since
          WHERE r.completed_at >= since.t AND r.started_at >= since.t
         UNION ALL
         SELECT r.model, r.started_at FROM ${s}.requests r, since
          WHERE r.state = 'processing' AND r.started_at >= since.t AND ${ownedR}
       )
       SELECT model, floor(extract(epoch FROM (started_at - since.t)) / $3)::int AS i, count(*)::int AS n
         FROM sent, since GROUP BY 1, 2`,
      [owner, buckets, bucketSeconds],
    ),
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
  ]);
  const series = new Map<string, number[]>();
  for (const r of dispatch.rows) {
    if (r.i < 0 || r.i >= buckets) continue;
    let counts = series.get(r.model);
    if (!counts) {
      counts = new Array(buckets).fill(0);
      series.set(r.model, counts);
    }
    counts[r.i] = r.n;
  }
  const sum = (f: (r: (typeof load.rows)[number]) => number) => load.rows.reduce((n, r) => n + f(r), 0);
  return {
    models: load.rows.map((r) => ({
      model: r.model,
      inFlight: r.in_flight,
      pending: r.pending,
      limit: r.concurrency ?? options.defaultModelConcurrency,
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
