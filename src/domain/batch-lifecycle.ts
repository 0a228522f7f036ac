/**
 * The batch lifecycle. A batch's status is derived from timestamps on its row, never stored: the
 * writes below set them, and batchLifecycleStatus (TypeScript) and batchStatusSql (SQL, for lists
 * filtered by status) read them by the same rules, generated from STATUS_RULES.
 *
 *   createBatch ──▶ in_progress ── finalize: nothing pending or in flight ─────────▶ completed
 *                    │  │   ▲                                                           │
 *                    │  │   └── retryFailedRequests: failed requests requeued ──────────┘
 *                    │  │       (deadline ahead; the batch is reopened)
 *                    │  └── the deadline passes ──▶ finalizing ── finalize: nothing in flight ──▶ expired
 *                    └── cancelBatch (deadline ahead) ──▶ cancelling ── finalize: nothing in flight ──▶ cancelled
 *
 * - A batch is created in_progress: its input was validated when its file was uploaded, and
 *   createBatch refuses an unusable file at once (an error, not a batch). So the OpenAI statuses
 *   `validating` and `failed` (input found invalid after creation) never happen and are not part of
 *   BATCH_STATUSES; `failed_at` stays in the batch object, always null (docs/decisions/0002-batch-lifecycle.md).
 * - `finalizing` is not written: a batch past its deadline reads finalizing until finalize ends it
 *   (its in-flight requests are aborted, its pending ones read as canceled with batch_expired).
 *   It reads `expired` only once it has ended, with its output and error files, as at OpenAI:
 *   clients treat expired as final and stop polling.
 * - A batch without a deadline (expires_at NULL) never expires.
 * - Reopen: retryFailedRequests requeues a completed batch's failed requests and clears its end
 *   (finished_at, finalizing_at, completed_at, the frozen counts): it is in_progress again. Cancelled
 *   and expired batches are never reopened.
 *
 * The live condition (a batch whose requests may be claimed) is liveBatchSql; its time-independent
 * part is the predicate of the partial index batches_live_idx (migration 0001), which
 * test/store/batch-lifecycle.test.ts checks against LIVE_INDEX_PREDICATE.
 */

/** The statuses a batch can have (OpenAI's, without validating and failed), in lifecycle order. */
export const BATCH_STATUSES = [
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
  'in_progress',
  'finalizing',
  'cancelling',
] as const satisfies readonly BatchLifecycleStatus[];

/** Statuses of a batch that has ended (a retry can still reopen a completed one). */
export const ENDED_BATCH_STATUSES = [
  'completed',
  'expired',
  'cancelled',
] as const satisfies readonly BatchLifecycleStatus[];

/** The columns the status is derived from. */
export interface BatchTimestamps {
  finalizingAt: Date | null;
  completedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  /** Null: the batch has no deadline. */
  expiresAt: Date | null;
}

type TimestampField = Exclude<keyof BatchTimestamps, 'expiresAt'>;

const COLUMNS: Record<TimestampField, string> = {
  finalizingAt: 'finalizing_at',
  completedAt: 'completed_at',
  expiredAt: 'expired_at',
  cancellingAt: 'cancelling_at',
  cancelledAt: 'cancelled_at',
};

/** One rule: the status holds when `field` is set (or, with `pastDeadline`, when the deadline has passed). */
type StatusRule =
  | { status: BatchLifecycleStatus; field: TimestampField }
  | { status: BatchLifecycleStatus; pastDeadline: true };

/** The first rule that holds gives the status; none holds: in_progress. */
const STATUS_RULES: readonly StatusRule[] = [
  { status: 'cancelled', field: 'cancelledAt' },
  { status: 'cancelling', field: 'cancellingAt' },
  { status: 'expired', field: 'expiredAt' },
  { status: 'completed', field: 'completedAt' },
  { status: 'finalizing', field: 'finalizingAt' },
  { status: 'finalizing', pastDeadline: true },
];

/** A batch's status at `now` (the deadline is the only input that changes with time). */
export function batchLifecycleStatus(b: BatchTimestamps, now: Date = new Date()): BatchLifecycleStatus {
  for (const rule of STATUS_RULES) {
    if ('field' in rule ? b[rule.field] !== null : isPastDeadline(b, now)) return rule.status;
  }
  return 'in_progress';
}

/** Whether the batch's completion window has closed: nothing of it will be sent any more. */
export function isPastDeadline(b: Pick<BatchTimestamps, 'expiresAt'>, now: Date = new Date()): boolean {
  return b.expiresAt !== null && b.expiresAt.getTime() <= now.getTime();
}

/** The facts that make a batch live. */
export interface LiveFacts {
  finishedAt: Date | null;
  cancellingAt: Date | null;
  deletedAt: Date | null;
  expiresAt: Date | null;
}

/** Live: its requests may be claimed (not ended, not being cancelled, not deleted, deadline ahead or none). */
export function isLive(b: LiveFacts, now: Date = new Date()): boolean {
  return b.finishedAt === null && b.cancellingAt === null && b.deletedAt === null && !isPastDeadline(b, now);
}

// SQL of the same rules. `b` is the batches table's alias ('' for none); `now` an SQL expression.

function col(b: string, column: string): string {
  return b ? `${b}.${column}` : column;
}

/** The time-independent part of the live condition: the predicate of the partial index batches_live_idx. */
export const LIVE_INDEX_PREDICATE = 'finished_at IS NULL AND cancelling_at IS NULL AND deleted_at IS NULL';

/** SQL: the deadline has passed (false without one). */
export function pastDeadlineSql(b = 'b', now = 'now()'): string {
  return `(${col(b, 'expires_at')} IS NOT NULL AND ${col(b, 'expires_at')} <= ${now})`;
}

/** SQL: the deadline is ahead, or there is none (NOT pastDeadlineSql). */
export function deadlineAheadSql(b = 'b', now = 'now()'): string {
  return `(${col(b, 'expires_at')} IS NULL OR ${col(b, 'expires_at')} > ${now})`;
}

/** SQL: the batch is live (isLive). The claim walks these batches through batches_live_idx. */
export function liveBatchSql(b = 'b', now = 'now()'): string {
  const indexed = LIVE_INDEX_PREDICATE.split(' AND ')
    .map((term) => col(b, term))
    .join(' AND ');
  return `${indexed} AND ${deadlineAheadSql(b, now)}`;
}

/** SQL: the batch's status (batchLifecycleStatus), a text CASE expression. */
export function batchStatusSql(b = 'b', now = 'now()'): string {
  const whens = STATUS_RULES.map((rule) => {
    const cond = 'field' in rule ? `${col(b, COLUMNS[rule.field])} IS NOT NULL` : pastDeadlineSql(b, now);
    return `WHEN ${cond} THEN '${rule.status}'`;
  });
  return `CASE ${whens.join(' ')} ELSE 'in_progress' END`;
}

/**
 * The transitions, with the operation that makes each and the timestamps it sets and clears
 * (`finishedAt` is set exactly when the batch ends and cleared when it is reopened; the counts are
 * frozen with it). test/domain/batch-lifecycle.test.ts checks each against batchLifecycleStatus.
 */
export interface BatchTransition {
  from: BatchLifecycleStatus | null;
  to: BatchLifecycleStatus;
  /** What makes it happen. */
  on: string;
  /** Where it is written. */
  by: string;
  sets: readonly (TimestampField | 'finishedAt')[];
  clears: readonly (TimestampField | 'finishedAt')[];
  /** The transition happens by the clock (the deadline), with no write. */
  deadlinePasses?: true;
}

export const BATCH_TRANSITIONS: readonly BatchTransition[] = [
  {
    from: null,
    to: 'in_progress',
    on: 'createBatch (in_progress_at = now(); expires_at = now() + the completion window, or NULL)',
    by: 'src/store/batches/batches.ts insertBatch',
    sets: [],
    clears: [],
  },
  {
    from: 'in_progress',
    to: 'completed',
    on: 'finalize: nothing pending or in flight',
    by: 'src/db/sql/batches/finalize-batch.ts',
    sets: ['finishedAt', 'finalizingAt', 'completedAt'],
    clears: [],
  },
  {
    from: 'in_progress',
    to: 'finalizing',
    on: 'the deadline passes (nothing more is claimed; in-flight requests are aborted)',
    by: 'read only: expires_at <= now()',
    sets: [],
    clears: [],
    deadlinePasses: true,
  },
  {
    from: 'finalizing',
    to: 'expired',
    on: 'finalize: nothing in flight (pending requests count as canceled)',
    by: 'src/db/sql/batches/finalize-batch.ts',
    sets: ['finishedAt', 'finalizingAt', 'expiredAt'],
    clears: [],
  },
  {
    from: 'in_progress',
    to: 'cancelling',
    on: 'cancelBatch, deadline ahead (one update of the batch row)',
    by: 'src/store/batches/batches.ts cancelBatch',
    sets: ['cancellingAt'],
    clears: [],
  },
  {
    from: 'cancelling',
    to: 'cancelled',
    on: 'finalize: nothing in flight (pending requests count as canceled)',
    by: 'src/db/sql/batches/finalize-batch.ts',
    sets: ['finishedAt', 'finalizingAt', 'cancelledAt'],
    clears: [],
  },
  {
    from: 'completed',
    to: 'in_progress',
    on: 'retryFailedRequests requeues failed requests, deadline ahead (reopen)',
    by: 'src/db/sql/batches/retry-failed.ts reopenBatchSql',
    sets: [],
    clears: ['finishedAt', 'finalizingAt', 'completedAt'],
  },
];
