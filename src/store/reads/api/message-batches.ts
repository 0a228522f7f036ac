import type pg from 'pg';
import { messageBatchResultsSql } from '../../../db/sql/results/message-batch-results.js';
import { InvalidStateError, NotFoundError } from '../../../domain/errors.js';
import { MESSAGES_PATH } from '../../../domain/message-batch.js';
import type { BatchInfo, BatchStatus } from '../../../domain/types.js';
import { statusesOf } from '../../batches/batch-status.js';
import { getBatch } from '../../batches/batches.js';
import { jsonlLines } from '../../files/content-lines.js';
import { openCopyLines } from '../../files/output-files.js';
import { BATCH_COLUMNS, type BatchRow, toBatchInfo } from '../../rows.js';

/**
 * The store side of Anthropic's Message Batches: batches whose endpoint is MESSAGES_PATH, read,
 * listed, deleted and their results streamed. Everything else (creation, cancel, claims, limits,
 * retries) is the ordinary batch's.
 */

/** The owner's message batch, or NotFoundError (also for an OpenAI batch: it is no message batch). */
export async function getMessageBatch(
  pool: pg.Pool,
  s: string,
  id: string,
  owner: string | null,
): Promise<BatchInfo> {
  const batch = await getBatch(pool, s, id, owner);
  if (batch.endpoint !== MESSAGES_PATH) throw new NotFoundError('batch', id);
  return batch;
}

export interface MessageBatchPageOptions {
  owner: string | null;
  /** 1–1000. */
  limit: number;
  /** The page just after this batch in list order (older ones). */
  afterId?: string;
  /** The page just before this batch in list order (newer ones). */
  beforeId?: string;
}

/**
 * A page of the owner's message batches, newest first, with Anthropic's cursors: `afterId` pages
 * towards older batches, `beforeId` towards newer ones (the `limit` nearest the cursor, still given
 * newest first); `hasMore` says whether more lie beyond the page in the direction paged. An id that
 * is not the owner's message batch gives an empty page.
 */
export async function listMessageBatches(
  pool: pg.Pool,
  s: string,
  options: MessageBatchPageOptions,
): Promise<{ data: { batch: BatchInfo; status: BatchStatus }[]; hasMore: boolean }> {
  const backwards = options.beforeId !== undefined;
  const cursor = options.beforeId ?? options.afterId ?? null;
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches
      WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1) AND endpoint = $2
        AND ($3::uuid IS NULL OR (created_at, id) ${backwards ? '>' : '<'}
             (SELECT created_at, id FROM ${s}.batches
               WHERE id = $3 AND endpoint = $2 AND ($1::text IS NULL OR owner = $1)))
      ORDER BY created_at ${backwards ? 'ASC' : 'DESC'}, id ${backwards ? 'ASC' : 'DESC'}
      LIMIT $4`,
    [options.owner, MESSAGES_PATH, cursor, options.limit + 1],
  );
  const page = rows.slice(0, options.limit);
  if (backwards) page.reverse();
  const statuses = await statusesOf(pool, s, page);
  const now = new Date();
  return {
    data: page.map((row, i) => ({ batch: toBatchInfo(row, now), status: statuses[i]! })),
    hasMore: rows.length > options.limit,
  };
}

/**
 * Deletes an ended message batch and the input file made for it (soft delete: both disappear from
 * every read at once; their rows stay for a purge). A batch still processing is an
 * InvalidStateError (cancel it first), one that is not the owner's message batch a NotFoundError.
 */
export async function deleteEndedMessageBatch(
  pool: pg.Pool,
  s: string,
  id: string,
  owner: string | null,
): Promise<void> {
  const { rows } = await pool.query<{ id: string }>(
    `WITH gone AS (
       UPDATE ${s}.batches SET deleted_at = now()
        WHERE id = $1 AND deleted_at IS NULL AND finished_at IS NOT NULL AND endpoint = $3
          AND ($2::text IS NULL OR owner = $2)
        RETURNING id, file_id),
     input AS (
       UPDATE ${s}.files f SET deleted_at = now() FROM gone
        WHERE f.id = gone.file_id AND f.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM ${s}.batches o
                           WHERE o.file_id = gone.file_id AND o.id <> gone.id AND o.deleted_at IS NULL))
     SELECT id FROM gone`,
    [id, owner, MESSAGES_PATH],
  );
  if (rows.length > 0) return;
  const batch = await getMessageBatch(pool, s, id, owner); // NotFoundError when it is not there
  if (batch.finishedAt === null) {
    throw new InvalidStateError(
      `message batch ${id} is still processing: only ended batches can be deleted (cancel it first)`,
    );
  }
}

/** A message batch's result lines (see sql/message-batch-results.ts), streamed as the caller reads. */
export async function* messageBatchResultLines(
  pool: pg.Pool,
  s: string,
  id: string,
): AsyncGenerator<string, void, undefined> {
  yield* jsonlLines(await openCopyLines(pool, messageBatchResultsSql(s, id)));
}
