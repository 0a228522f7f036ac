/** OpenAI batch statuses (REFERENCE §1). */
export type BatchLifecycleStatus =
  | 'validating'
  | 'failed'
  | 'in_progress'
  | 'finalizing'
  | 'completed'
  | 'expired'
  | 'cancelling'
  | 'cancelled';

export interface BatchTimestamps {
  inProgressAt: Date | null;
  finalizingAt: Date | null;
  completedAt: Date | null;
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  expiresAt: Date;
}

/** Derives a batch's status from its timestamps; `now` decides a deadline that has passed unnoticed. */
export function batchLifecycleStatus(b: BatchTimestamps, now: Date = new Date()): BatchLifecycleStatus {
  if (b.failedAt) return 'failed';
  if (b.cancelledAt) return 'cancelled';
  if (b.cancellingAt) return 'cancelling';
  if (b.expiredAt) return 'expired';
  if (b.completedAt) return 'completed';
  if (b.finalizingAt) return 'finalizing';
  if (!b.inProgressAt) return 'validating';
  if (b.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'in_progress';
}
