import type pg from 'pg';
import { isPastDeadline } from '../../domain/batch-lifecycle.js';
import type { BatchStatus } from '../../domain/types.js';
import { type BatchRow, toBatchInfo } from '../rows.js';
import { frozenUsage, liveUsage } from './batch-usage.js';
import { getBatchRow } from './batches.js';

/**
 * A batch's progress (BatchStatus): counts by state, usage and timestamps. An ended batch's counts
 * and usage are frozen on its row (src/db/sql/batches/finalize-batch.ts); a live batch's are
 * counted from its requests through the (batch_id, state) index. toBatchStatus is the pure part:
 * the row and the counts in, the status out.
 */

interface CountRow extends LiveCounts {
  batch_id: string;
}

/**
 * Progress of a batch: frozen counts once it has ended, else counted by state through the
 * (batch_id, state) index. Usage of a live batch is summed from its completed requests, unless
 * `liveUsage` is false (a caller that shows counts only: the sums read every completed row again;
 * the status then carries the batch row's usage, zero while it is live).
 */
export async function getBatchStatus(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
  options: { liveUsage?: boolean } = {},
): Promise<BatchStatus> {
  const row = await getBatchRow(pool, s, id, owner);
  const [status] = await statusesOf(pool, s, [row]);
  if (row.finished_at === null && options.liveUsage !== false) {
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
