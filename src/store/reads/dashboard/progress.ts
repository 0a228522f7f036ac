import type pg from 'pg';
import { REQUEST_STATES, type RequestState } from '../../../domain/request-state.js';
import type { BatchInfo, BatchStatus } from '../../../domain/types.js';
import { toBatchStatus } from '../../batches/batch-status.js';
import { frozenUsage, liveUsage } from '../../batches/batch-usage.js';
import { toBatchInfo } from '../../rows.js';
import { recentRate } from './batch-list.js';
import { batchRowOf } from './scope.js';
import { type Throughput, throughputOf } from './throughput.js';

export interface BatchProgress {
  batch: BatchInfo;
  progress: BatchStatus;
  /** Requests by the state a reader sees (pending rows of a cancelled batch read canceled). */
  stateCounts: Record<RequestState, number>;
  /** Requests finished per second over the last minute; null once ended. */
  recentRate: number | null;
  throughput: Throughput;
}

/**
 * Everything the batch page shows above its table, with one read of the batch row and, while the
 * batch is live, one count by state through requests_batch_state_idx (ended batches carry frozen
 * counts).
 */
export async function batchProgress(
  pool: pg.Pool,
  s: string,
  batchId: string,
  owner: string | null,
): Promise<BatchProgress> {
  const row = await batchRowOf(pool, s, batchId, owner);
  const live = row.finished_at === null;
  const [counted, usage, rate, throughput] = await Promise.all([
    live
      ? pool.query<{ state: RequestState; n: number }>(
          `SELECT state, count(*)::int AS n FROM ${s}.requests WHERE batch_id = $1 GROUP BY state`,
          [batchId],
        )
      : null,
    live ? liveUsage(pool, s, batchId) : frozenUsage(pool, s, [batchId]).then((m) => m.get(batchId) ?? null),
    live ? recentRate(pool, s, batchId) : null,
    throughputOf(pool, s, row),
  ]);
  const raw = Object.fromEntries(REQUEST_STATES.map((state) => [state, 0])) as Record<RequestState, number>;
  for (const c of counted?.rows ?? []) raw[c.state] = c.n;
  const now = new Date();
  const progress = toBatchStatus(
    row,
    live
      ? {
          pending: raw.pending,
          in_flight: raw.claimed + raw.processing,
          completed: raw.completed,
          failed: raw.failed,
          canceled: raw.canceled,
        }
      : undefined,
    now,
  );
  if (usage) {
    if (live) progress.usage = usage.usage;
    progress.usageByModel = usage.byModel;
  }
  return {
    batch: toBatchInfo(row, now),
    progress,
    stateCounts: {
      ...raw,
      pending: progress.pendingRequests,
      claimed: live ? raw.claimed : 0,
      processing: live ? raw.processing : 0,
      completed: progress.completedRequests,
      failed: progress.failedRequests,
      canceled: progress.canceledRequests,
    },
    recentRate: rate,
    throughput,
  };
}
