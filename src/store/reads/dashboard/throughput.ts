import type pg from 'pg';
import type { BatchRow } from '../../rows.js';
import { batchRowOf } from './scope.js';

/**
 * A batch's throughput chart: requests finished per time bucket, through requests_completed_at_idx
 * and, for failures a retry has since requeued, request_failures_batch_idx.
 */

export interface Throughput {
  /** Start of the first bucket. */
  start: Date;
  bucketSeconds: number;
  /** Per bucket, in time order, including empty buckets; failed includes failures since retried. */
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
  return throughputOf(pool, s, row);
}

/** Throughput of a batch whose row (and ownership) the caller has read. */
export async function throughputOf(pool: pg.Pool, s: string, row: BatchRow): Promise<Throughput> {
  const batchId = row.id;
  const start = row.in_progress_at ?? row.created_at;
  const end = row.finished_at ?? new Date();
  const bucketSeconds = bucketSecondsFor(Math.max(1, (end.getTime() - start.getTime()) / 1000));
  // Failures since retried count where they happened: the chart keeps its red after a retry.
  // Every finished row per bucket is counted from requests_completed_at_idx alone (an index-only
  // scan: an ended batch's pages are all-visible once vacuumed), and only the failed and canceled
  // ones are read from the heap (through requests_batch_state_idx: OFFSET 0 keeps the time bound
  // out of that scan, else the planner walks requests_completed_at_idx and reads every row's heap
  // to filter the state, 530 buffers) to tell them apart: completed = finished - failed - canceled. Counting by state read every row's heap: 10,000 rows of an ended
  // batch, 530 buffers, 40 ms at load 15 (issue 14).
  const { rows } = await pool.query<{ i: number; completed: number; failed: number }>(
    `SELECT i, (sum(finished) - sum(not_completed))::int AS completed, sum(failed)::int AS failed FROM (
       SELECT floor(extract(epoch FROM (completed_at - $2::timestamptz)) / $3)::int AS i,
              count(*) AS finished, 0 AS not_completed, 0 AS failed
         FROM ${s}.requests
        WHERE batch_id = $1 AND completed_at IS NOT NULL AND completed_at >= $2
        GROUP BY 1
       UNION ALL
       SELECT floor(extract(epoch FROM (completed_at - $2::timestamptz)) / $3)::int, 0, count(*),
              count(*) FILTER (WHERE state = 'failed')
         FROM (SELECT completed_at, state FROM ${s}.requests
                WHERE batch_id = $1 AND state IN ('failed', 'canceled') OFFSET 0) unsent
        WHERE completed_at >= $2
        GROUP BY 1
       UNION ALL
       SELECT floor(extract(epoch FROM (failed_at - $2::timestamptz)) / $3)::int, 0, 0, count(*)
         FROM ${s}.request_failures
        WHERE batch_id = $1 AND failed_at >= $2
        GROUP BY 1
     ) buckets GROUP BY i ORDER BY i`,
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
