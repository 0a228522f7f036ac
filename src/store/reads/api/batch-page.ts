import type pg from 'pg';
import type { BatchInfo, BatchStatus, BatchUpstream, Page } from '../../../domain/types.js';
import { upstreamsOf } from '../../batches/batch-routes.js';
import { statusesOf } from '../../batches/batch-status.js';
import type { ListBatchesOptions } from '../../batches/batches.js';
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
