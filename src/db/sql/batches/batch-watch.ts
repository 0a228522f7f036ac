import { liveBatchSql, pastDeadlineSql } from '../../../domain/batch-lifecycle.js';

/**
 * Periodic batch checks of a daemon (each bounded by the number of live batches, never the backlog).
 */

/**
 * Of the batches a daemon has in flight ($1 uuid[]), those being cancelled or deleted, or past their
 * deadline: a missed batch_cancelled notification (or a deadline moved after the claim) is caught
 * here within one poll interval. `cancelled` tells which reason applies.
 */
export function cancelledBatchesSql(s: string): string {
  return `SELECT id, (cancelling_at IS NOT NULL OR deleted_at IS NOT NULL) AS cancelled FROM ${s}.batches
           WHERE id = ANY($1::uuid[]) AND (cancelling_at IS NOT NULL OR deleted_at IS NOT NULL OR ${pastDeadlineSql('')})`;
}

/**
 * Unfinished batches that may have ended: past their deadline, cancelling, or with nothing pending
 * or in flight (requests_batch_state_idx). The caller runs finalize-batch on each; finalize itself
 * decides. $1 limit.
 */
export function endableBatchesSql(s: string): string {
  return `
SELECT b.id FROM ${s}.batches b
 WHERE b.finished_at IS NULL AND b.deleted_at IS NULL
   AND (${pastDeadlineSql('b')} OR b.cancelling_at IS NOT NULL
        OR NOT EXISTS (SELECT 1 FROM ${s}.requests r
                        WHERE r.batch_id = b.id AND r.state IN ('pending', 'claimed', 'processing')))
 LIMIT $1`;
}

/** Pending requests per model in live batches, for the queue-depth gauge (periodic, with a timeout). */
export function queueDepthSql(s: string): string {
  return `
SELECT r.model, count(*)::bigint AS n
  FROM ${s}.batches b JOIN ${s}.requests r ON r.batch_id = b.id AND r.state = 'pending'
 WHERE ${liveBatchSql('b')}
 GROUP BY r.model`;
}
