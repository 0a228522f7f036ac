import type pg from 'pg';
import { finalizeBatchSql } from '../../db/sql/batches/finalize-batch.js';
import { reopenBatchSql, retryFailedSql } from '../../db/sql/batches/retry-failed.js';
import { withTransaction } from '../../db/transaction.js';
import { deadlineAheadSql, isPastDeadline } from '../../domain/batch-lifecycle.js';
import {
  IdempotencyKeyReusedError,
  InvalidStateError,
  NotFoundError,
  ValidationError,
} from '../../domain/errors.js';
import { DEFAULT_RETRY_RULES } from '../../domain/retry.js';
import type {
  BatchInfo,
  BatchStatus,
  CreateBatchOptions,
  ListOptions,
  ListRequestsOptions,
  Page,
  RequestRecord,
  RetryOptions,
} from '../../domain/types.js';
import {
  assertId,
  BATCH_COLUMNS,
  type BatchRow,
  isUuid,
  REQUEST_COLUMNS,
  type RequestRow,
  toBatchInfo,
  toRequestRecord,
} from '../rows.js';
import {
  DEFAULT_COMPLETION_WINDOW,
  differingParameters,
  type FirstUse,
  validateBatchOptions,
} from './batch-options.js';
import { insertRoutedRequests } from './batch-routes.js';
import { frozenUsage, liveUsage } from './batch-usage.js';

export interface BatchEvents {
  /** Publishes one notification per batch event (rule 9 of docs/decisions/0003: never per row). */
  notify(
    client: pg.ClientBase,
    event: { type: 'batch_created' | 'batch_cancelled' | 'batch_reopened'; batchId: string },
  ): Promise<void>;
}

/**
 * Creates a batch from a file: the batch row, one request per template and the batch's model list,
 * in one transaction, then one notification. With an idempotency key, a repeat returns the first
 * batch (rule 8 of docs/decisions/0003: a batch is never populated twice); the same key with other parameters is an
 * IdempotencyKeyReusedError naming them.
 */
export async function insertBatch(
  pool: pg.Pool,
  s: string,
  events: BatchEvents,
  fileId: string,
  options: CreateBatchOptions = {},
): Promise<string> {
  assertId('file', fileId);
  const windowMs = validateBatchOptions(options);
  const owner = options.owner ?? null;
  const key = options.idempotencyKey ?? null;
  return withTransaction(pool, async (client) => {
    if (key !== null) {
      // Serialise creators using the same key, so the second sees the first's batch.
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [
        `${s}.batch_key:${owner ?? ''}:${key}`,
      ]);
      const { rows } = await client.query<FirstUse>(
        `SELECT id, file_id, endpoint, completion_window, metadata FROM ${s}.batches
          WHERE coalesce(owner, '') = coalesce($1, '') AND idempotency_key = $2`,
        [owner, key],
      );
      if (rows[0]) {
        const differs = differingParameters(rows[0], fileId, options, windowMs);
        if (differs.length > 0) throw new IdempotencyKeyReusedError(key, rows[0].id, differs);
        return rows[0].id;
      }
    }
    const file = await client.query<{ template_count: number }>(
      `SELECT template_count FROM ${s}.files
        WHERE id = $1 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())
          AND purpose = 'batch' AND ($2::text IS NULL OR owner = $2)
        FOR SHARE`,
      [fileId, owner],
    );
    if (!file.rows[0]) throw new NotFoundError('file', fileId);
    if (file.rows[0].template_count === 0) {
      throw new ValidationError([
        { code: 'empty_file', param: 'input_file_id', message: 'the file has no requests' },
      ]);
    }
    const { rows } = await client.query<{ id: string }>(
      `INSERT INTO ${s}.batches (file_id, owner, endpoint, completion_window, metadata, idempotency_key,
                                 total_requests, in_progress_at, expires_at, output_expires_after)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now() + $8::float8 * interval '1 millisecond', $9)
       RETURNING id`,
      [
        fileId,
        owner,
        options.endpoint ?? '',
        windowMs === null ? null : (options.completionWindow ?? DEFAULT_COMPLETION_WINDOW),
        options.metadata ?? null,
        key,
        file.rows[0].template_count,
        windowMs,
        options.outputExpiresAfterSeconds ?? null,
      ],
    );
    const batchId = rows[0]!.id;
    await insertRoutedRequests(
      client,
      s,
      batchId,
      fileId,
      options.router ?? null,
      options.requireRoutes ?? false,
    );
    await events.notify(client, { type: 'batch_created', batchId });
    return batchId;
  });
}

export async function getBatch(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
): Promise<BatchInfo> {
  return toBatchInfo(await getBatchRow(pool, s, id, owner));
}

export interface ListBatchesOptions extends ListOptions {
  /** Only batches made from this file. */
  fileId?: string;
}

/** Newest first, keyset-paginated by the last id seen. */
export async function listBatches(
  pool: pg.Pool,
  s: string,
  options: ListBatchesOptions = {},
): Promise<Page<BatchInfo>> {
  const limit = Math.min(Math.max(options.limit ?? 20, 1), 10_000);
  const after = options.after !== undefined && isUuid(options.after) ? options.after : null;
  if (options.after !== undefined && after === null) return { data: [], hasMore: false };
  if (options.fileId !== undefined && !isUuid(options.fileId)) return { data: [], hasMore: false };
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches
      WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1) AND ($2::uuid IS NULL OR file_id = $2)
        AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM ${s}.batches WHERE id = $3))
      ORDER BY created_at DESC, id DESC
      LIMIT $4`,
    [options.owner ?? null, options.fileId ?? null, after, limit + 1],
  );
  const now = new Date();
  return { data: rows.slice(0, limit).map((r) => toBatchInfo(r, now)), hasMore: rows.length > limit };
}

interface CountRow extends LiveCounts {
  batch_id: string;
}

async function getBatchRow(pool: pg.Pool, s: string, id: string, owner?: string | null): Promise<BatchRow> {
  assertId('batch', id);
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches
      WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)`,
    [id, owner ?? null],
  );
  if (!rows[0]) throw new NotFoundError('batch', id);
  return rows[0];
}

/**
 * Progress of a batch: frozen counts once it has ended, else counted by state through the
 * (batch_id, state) index. Usage of a live batch is summed from its completed requests.
 */
export async function getBatchStatus(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
): Promise<BatchStatus> {
  const row = await getBatchRow(pool, s, id, owner);
  const [status] = await statusesOf(pool, s, [row]);
  if (row.finished_at === null) {
    const live = await liveUsage(pool, s, id);
    status!.usage = live.usage;
    status!.usageByModel = live.byModel;
  }
  return status!;
}

/**
 * Statuses of several batches (a list page) with one counting query for all the live ones.
 * Usage is reported for ended batches only (it is frozen with the counts), per model from their
 * batch_models rows (one query for the page).
 */
export async function statusesOf(pool: pg.Pool, s: string, rows: BatchRow[]): Promise<BatchStatus[]> {
  const live = rows.filter((b) => b.finished_at === null).map((b) => b.id);
  const counts = new Map<string, CountRow>();
  if (live.length > 0) {
    const result = await pool.query<CountRow>(
      `SELECT r.batch_id,
              count(*) FILTER (WHERE r.state = 'pending')                  AS pending,
              count(*) FILTER (WHERE r.state IN ('claimed', 'processing')) AS in_flight,
              count(*) FILTER (WHERE r.state = 'completed')                AS completed,
              count(*) FILTER (WHERE r.state = 'failed')                   AS failed,
              count(*) FILTER (WHERE r.state = 'canceled')                 AS canceled
         FROM ${s}.requests r WHERE r.batch_id = ANY($1::uuid[])
        GROUP BY r.batch_id`,
      [live],
    );
    for (const c of result.rows) counts.set(c.batch_id, c);
  }
  const frozen = await frozenUsage(
    pool,
    s,
    rows.filter((b) => b.finished_at !== null).map((b) => b.id),
  );
  const now = new Date();
  return rows.map((row) => {
    const status = toBatchStatus(row, counts.get(row.id), now);
    status.usageByModel = frozen.get(row.id)?.byModel ?? [];
    return status;
  });
}

/** A live batch's requests counted by state (in_flight: claimed and processing). */
export interface LiveCounts {
  pending: number | string;
  in_flight: number | string;
  completed: number | string;
  failed: number | string;
  canceled: number | string;
}

/** A batch's progress from its row and, while it is live, its counts by state. */
export function toBatchStatus(row: BatchRow, c: LiveCounts | undefined, now = new Date()): BatchStatus {
  const b = toBatchInfo(row, now);
  const frozen = row.finished_at !== null;
  let pending = frozen ? 0 : Number(c?.pending ?? 0);
  let canceled = frozen ? row.canceled_count! : Number(c?.canceled ?? 0);
  // Pending rows of a cancelled batch, or of one past its deadline, read as canceled (cancel is one
  // row update; nothing is claimed past the deadline), as in request_view.
  if (b.cancellingAt !== null || isPastDeadline(b, now)) {
    canceled += pending;
    pending = 0;
  }
  return {
    batchId: b.id,
    fileId: b.fileId,
    status: b.status,
    totalRequests: b.totalRequests,
    pendingRequests: pending,
    inProgressRequests: frozen ? 0 : Number(c?.in_flight ?? 0),
    completedRequests: frozen ? row.completed_count! : Number(c?.completed ?? 0),
    failedRequests: frozen ? row.failed_count! : Number(c?.failed ?? 0),
    canceledRequests: canceled,
    usage: {
      inputTokens: Number(row.input_tokens ?? 0),
      cachedTokens: Number(row.cached_tokens ?? 0),
      outputTokens: Number(row.output_tokens ?? 0),
      reasoningTokens: Number(row.reasoning_tokens ?? 0),
      totalTokens: Number(row.total_tokens ?? 0),
    },
    usageByModel: [],
    createdAt: b.createdAt,
    expiresAt: b.expiresAt,
    finishedAt: b.finishedAt,
  };
}

/**
 * Cancels a batch with one update of its row (rule 6 of docs/decisions/0003). Daemons learn of it by notification and
 * poll, abort in-flight HTTP and settle those requests as canceled. Cancelling a cancelling or
 * cancelled batch is a no-op; cancelling a batch that ended otherwise, or whose deadline has passed
 * (it reads finalizing and will end expired), is an InvalidStateError.
 */
export async function cancelBatch(
  pool: pg.Pool,
  s: string,
  events: BatchEvents,
  id: string,
  owner?: string | null,
): Promise<BatchInfo> {
  const batch = await getBatch(pool, s, id, owner);
  if (batch.cancellingAt !== null) return batch;
  refuseCancel(batch);
  const cancelled = await withTransaction(pool, async (client) => {
    // The same conditions in SQL: a batch that ended, or whose deadline passed, since it was read
    // is not cancelled (it must end expired, not cancelled).
    const { rowCount } = await client.query(
      `UPDATE ${s}.batches SET cancelling_at = now()
        WHERE id = $1 AND cancelling_at IS NULL AND finished_at IS NULL AND ${deadlineAheadSql('')}`,
      [id],
    );
    const updated = (rowCount ?? 0) > 0;
    if (updated) await events.notify(client, { type: 'batch_cancelled', batchId: id });
    return updated;
  });
  if (!cancelled) {
    const current = await getBatch(pool, s, id, owner);
    if (current.cancellingAt !== null) return current;
    // Not ended, so the database found the deadline passed (its clock decides): refuse as such.
    refuseCancel(current, current.expiresAt ?? undefined);
  }
  await finalizeBatch(pool, s, id);
  return getBatch(pool, s, id, owner);
}

/** Throws unless the batch can still be cancelled (live, deadline ahead). */
function refuseCancel(batch: BatchInfo, now = new Date()): void {
  if (batch.finishedAt !== null) {
    throw new InvalidStateError(`cannot cancel batch ${batch.id}: it is already ${batch.status}`);
  }
  if (isPastDeadline(batch, now)) {
    throw new InvalidStateError(
      `cannot cancel batch ${batch.id}: its completion window has passed; it is finalizing and will end expired`,
    );
  }
}

/** Ends the batch if its work is over (see sql/finalize-batch.ts). Returns whether it ended now. */
export async function finalizeBatch(pool: pg.Pool | pg.ClientBase, s: string, id: string): Promise<boolean> {
  const { rowCount } = await pool.query(finalizeBatchSql(s), [id]);
  return (rowCount ?? 0) > 0;
}

/**
 * Puts a batch's failed requests back to pending with their attempts reset (all of them, or only
 * the retriable ones), and reopens the batch if it had ended. Each failed outcome is kept in
 * request_failures and the batch counts its retried requests (sql/retry-failed.ts). Returns how
 * many requests were requeued.
 */
export async function retryFailedRequests(
  pool: pg.Pool,
  s: string,
  events: BatchEvents,
  id: string,
  owner?: string | null,
  options: RetryOptions = {},
  /** The HTTP statuses the daemons retry: what `only: 'retriable'` requeues. */
  retryableStatuses: ReadonlySet<number> = DEFAULT_RETRY_RULES.retryableStatuses,
): Promise<number> {
  const batch = await getBatch(pool, s, id, owner);
  if (batch.cancellingAt !== null || batch.status === 'expired') {
    throw new InvalidStateError(`cannot retry requests of batch ${id}: it is ${batch.status}`);
  }
  // Nothing is claimed past the deadline: requeued requests would never be sent.
  if (isPastDeadline(batch)) {
    throw new InvalidStateError(`cannot retry requests of batch ${id}: its completion window has passed`);
  }
  return withTransaction(pool, async (client) => {
    const locked = await client.query<{ finished_at: Date | null }>(
      `SELECT finished_at FROM ${s}.batches WHERE id = $1 FOR UPDATE`,
      [id],
    );
    const { rows } = await client.query<{ n: number }>(retryFailedSql(s), [
      id,
      options.only === 'retriable',
      [...retryableStatuses],
    ]);
    const n = rows[0]!.n;
    if (n > 0 && locked.rows[0]?.finished_at && options.reopen === false) {
      throw new InvalidStateError(
        `batch ${id} has ended: retrying ${n} request${n === 1 ? '' : 's'} reopens it (confirm with reopen)`,
        { reason: 'batch_ended' },
      );
    }
    if (n > 0) {
      await client.query(reopenBatchSql(s), [id, n]);
      await events.notify(client, { type: 'batch_reopened', batchId: id });
    }
    return n;
  });
}

/** A batch's requests in input order, as a discriminated union on `state` (the effective state). */
export async function listRequests(
  pool: pg.Pool,
  s: string,
  id: string,
  owner: string | null | undefined,
  options: ListRequestsOptions = {},
): Promise<RequestRecord[]> {
  await getBatch(pool, s, id, owner);
  const { rows } = await pool.query<RequestRow>(
    `SELECT ${REQUEST_COLUMNS}
       FROM ${s}.request_view r JOIN ${s}.request_templates t ON t.id = r.template_id
      WHERE r.batch_id = $1
        AND ($2::text IS NULL OR r.effective_state = $2)
        AND ($3::text IS NULL OR strpos(t.custom_id, $3) > 0)
        AND r.line_number > $4
      ORDER BY r.line_number
      LIMIT $5`,
    [id, options.state ?? null, options.search ?? null, options.afterLine ?? 0, options.limit ?? null],
  );
  return rows.map(toRequestRecord);
}
