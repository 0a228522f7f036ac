/** OpenAI batch statuses (REFERENCE §1), in lifecycle order. */
export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;

export type BatchLifecycleStatus = (typeof BATCH_STATUSES)[number];

/** Statuses of a batch that has not ended: its counts and rate still move. */
export const LIVE_BATCH_STATUSES = [
  'validating',
  'in_progress',
  'finalizing',
  'cancelling',
] as const satisfies readonly BatchLifecycleStatus[];

/** Statuses of a batch that has ended (a retry can still reopen a completed one). */
export const ENDED_BATCH_STATUSES = BATCH_STATUSES.filter(
  (s): s is Exclude<BatchLifecycleStatus, (typeof LIVE_BATCH_STATUSES)[number]> =>
    !(LIVE_BATCH_STATUSES as readonly string[]).includes(s),
);

export interface BatchTimestamps {
  inProgressAt: Date | null;
  finalizingAt: Date | null;
  completedAt: Date | null;
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  /** Null: the batch has no deadline. */
  expiresAt: Date | null;
}

/**
 * Derives a batch's status from its timestamps. A batch whose deadline (`expiresAt`, decided by
 * `now`) has passed but which has not ended yet reads `finalizing`: its in-flight requests are being
 * aborted and nothing more will be sent. It reads `expired` only once it has ended (expiredAt set,
 * with its output and error files), as at OpenAI: clients treat `expired` as final and stop polling,
 * so it must not be shown before the results exist.
 */
export function batchLifecycleStatus(b: BatchTimestamps, now: Date = new Date()): BatchLifecycleStatus {
  if (b.failedAt) return 'failed';
  if (b.cancelledAt) return 'cancelled';
  if (b.cancellingAt) return 'cancelling';
  if (b.expiredAt) return 'expired';
  if (b.completedAt) return 'completed';
  if (b.finalizingAt) return 'finalizing';
  if (!b.inProgressAt) return 'validating';
  if (isPastDeadline(b, now)) return 'finalizing';
  return 'in_progress';
}

/** Whether the batch's completion window has closed: nothing of it will be sent any more. */
export function isPastDeadline(b: Pick<BatchTimestamps, 'expiresAt'>, now: Date = new Date()): boolean {
  return b.expiresAt !== null && b.expiresAt.getTime() <= now.getTime();
}
