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

/**
 * Batches: their lifecycle's writes (create with its requests, cancel, finalize, retry with reopen;
 * the state machine is src/domain/batch-lifecycle.ts) and the reads the library exposes (a batch,
 * a page of batches, a batch's requests). Progress counts are batch-status.ts.
 */

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
      options.coalesce === true,
    );
    await analyzeAfterLargeBatch(client, s, file.rows[0].template_count);
    await events.notify(client, { type: 'batch_created', batchId });
    return batchId;
  });
}

/** A batch this large relative to the requests table refreshes the table's statistics. */
const ANALYZE_MIN_ROWS = 1000;
const ANALYZE_SHARE = 0.2;

/**
 * Refreshes the planner's statistics of requests when this batch adds at least ANALYZE_MIN_ROWS
 * rows and more than ANALYZE_SHARE of what the statistics last counted (a new install's first big
 * batch, a table that grew fast). Without them the claim's walk of a batch's pending rows can be
 * planned as "read all of the batch's rows and sort them" on every claim (9.5 ms a claim at 12,600
 * pending rows, against an ordered index walk that stops after its LIMIT); autovacuum's analyze
 * comes up to a minute later. In the batch's own transaction, so the sample sees its rows; ANALYZE
 * samples at most 30,000 rows, whatever the table's size.
 */
async function analyzeAfterLargeBatch(client: pg.PoolClient, s: string, added: number): Promise<void> {
  if (added < ANALYZE_MIN_ROWS) return;
  const { rows } = await client.query<{ counted: number }>(
    `SELECT greatest(reltuples, 0)::float8 AS counted FROM pg_class WHERE oid = $1::regclass`,
    [`${s}.requests`],
  );
  if (added <= ANALYZE_SHARE * (rows[0]?.counted ?? 0)) return;
  await client.query(`ANALYZE ${s}.requests`);
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

/** The owner's batch row (any owner's with owner null or undefined); NotFoundError otherwise. */
export async function getBatchRow(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
): Promise<BatchRow> {
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
