import type pg from 'pg';
import type { BatchInfo, BatchStatus, BatchUpstream, Page } from '../../../domain/types.js';
import { upstreamsOf } from '../../batches/batch-routes.js';
import { type ListBatchesOptions, statusesOf } from '../../batches/batches.js';
import { BATCH_COLUMNS, type BatchRow, isUuid, toBatchInfo } from '../../rows.js';

/**
 * A page of batches with their progress and upstreams, for the API's list: one query for the page,
 * one counting query for all its live batches (ended ones carry frozen counts) and one for their
 * routes, instead of reads per batch.
 */
export async function listBatchesWithStatus(
  pool: pg.Pool,
  s: string,
  options: ListBatchesOptions & { deadDaemonAfterMs: number },
): Promise<Page<{ batch: BatchInfo; status: BatchStatus; upstreams: BatchUpstream[] }>> {
  const limit = Math.min(Math.max(options.limit ?? 20, 1), 10_000);
  const after = options.after !== undefined && isUuid(options.after) ? options.after : null;
  if (options.after !== undefined && after === null) return { data: [], hasMore: false };
  const { rows } = await pool.query<BatchRow>(
    `SELECT ${BATCH_COLUMNS} FROM ${s}.batches
      WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1)
        AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM ${s}.batches WHERE id = $2))
      ORDER BY created_at DESC, id DESC
      LIMIT $3`,
    [options.owner ?? null, after, limit + 1],
  );
  const page = rows.slice(0, limit);
  const [statuses, upstreams] = await Promise.all([
    statusesOf(pool, s, page),
    upstreamsOf(
      pool,
      s,
      page.map((r) => r.id),
      options.deadDaemonAfterMs,
    ),
  ]);
  const now = new Date();
  return {
    data: page.map((row, i) => ({
      batch: toBatchInfo(row, now),
      status: statuses[i]!,
      upstreams: upstreams.get(row.id) ?? [],
    })),
    hasMore: rows.length > limit,
  };
}

/**
 * The first line of a file whose URL path differs from `path` (a batch's endpoint must match every
 * line), or undefined. Walks the file's templates in line order through their unique index.
 */
export async function firstPathMismatch(
  pool: pg.Pool,
  s: string,
  fileId: string,
  path: string,
): Promise<{ line: number; path: string } | undefined> {
  const { rows } = await pool.query<{ line_number: number; path: string }>(
    `SELECT line_number, path FROM ${s}.request_templates
      WHERE file_id = $1 AND path <> $2 ORDER BY line_number LIMIT 1`,
    [fileId, path],
  );
  return rows[0] ? { line: rows[0].line_number, path: rows[0].path } : undefined;
}

/** Sets an uploaded file's expiry, `seconds` after its created_at (OpenAI's expires_after), known only once the upload has ended. */
export async function setFileExpiry(
  pool: pg.Pool,
  s: string,
  fileId: string,
  seconds: number,
): Promise<void> {
  await pool.query(
    `UPDATE ${s}.files SET expires_at = created_at + $2::int * interval '1 second' WHERE id = $1`,
    [fileId, seconds],
  );
}
