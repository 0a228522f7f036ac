import type pg from 'pg';
import { BATCH_STATUSES, type BatchLifecycleStatus } from '../../../domain/batch-lifecycle.js';
import { NotFoundError } from '../../../domain/errors.js';
import { REQUEST_STATES, type RequestState } from '../../../domain/request-state.js';
import { assertId, BATCH_COLUMNS, type BatchRow } from '../../rows.js';

/**
 * What every dashboard read shares: owner scoping (null = all owners, for library callers) and
 * the parsing of the lists the dashboard filters on.
 */

export function isBatchStatus(s: string): s is BatchLifecycleStatus {
  return (BATCH_STATUSES as readonly string[]).includes(s);
}

export function isRequestState(s: string): s is RequestState {
  return (REQUEST_STATES as readonly string[]).includes(s);
}

/** The batch's row; NotFoundError unless it exists and belongs to the owner. */
export async function batchRowOf(
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
