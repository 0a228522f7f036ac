/**
 * The request lifecycle. Every write to a request row is guarded on the state it expects (and, for
 * in-flight rows, on the owning daemon and attempt), so a late write from a stale daemon can never
 * overwrite a row that has moved on; the terminal-row trigger of migration 0001 refuses any change
 * of a completed or canceled row, and of a failed one except back to pending.
 *
 *   pending ──claim──▶ processing ──2xx───────────────────────────────▶ completed
 *      ▲                  ├──final error / retries spent──────────────▶ failed
 *      │                  ├──batch cancelled or past its deadline─────▶ canceled (the attempt is aborted)
 *      ├──────────────────┘ retriable error (at not_before), lease expired, daemon dead, hand-back
 *      ├── failed: retryFailedRequests (attempt reset; the failure stays in request_failures)
 *      └── claimed: reclaim, hand-back
 *   pending ──hold (reserved)──▶ claimed ──send (reserved)──▶ processing
 *
 * - `processing` means held by one daemon (daemon_id, attempt, lease): the claim's commit is the
 *   durable mark that the request may be on the wire. A daemon claims ahead of need
 *   (src/daemon/ledger.ts): a processing row may wait in its local queue for a few milliseconds
 *   before it is sent, or never be sent (stop, cancel, deadline): it then goes back to pending as a
 *   hand-back (complete.ts, giveBack: the attempt the claim counted is undone). A crash is the same
 *   as for a row on the wire: reclaim hands it back. No second write sits between claim and send.
 * - `claimed` is reserved (no writer uses it): marking held rows `claimed` and then `processing`
 *   before sending would put one more row update (a non-HOT one: the state is indexed) on every
 *   request's path. Every reader treats claimed and processing alike as in flight (reclaim,
 *   hand-back, counts, the in-flight and lease indexes).
 * - Reads: a pending row under a cancelled or expired batch *reads* as canceled (batch_cancelled or
 *   batch_expired, request_view in migration 0001) without being rewritten: cancelling is one update
 *   of the batch row.
 */
export const REQUEST_STATES = [
  'pending',
  'claimed',
  'processing',
  'completed',
  'failed',
  'canceled',
] as const;
export type RequestState = (typeof REQUEST_STATES)[number];

export const TERMINAL_STATES: readonly RequestState[] = ['completed', 'failed', 'canceled'];
export const IN_FLIGHT_STATES: readonly RequestState[] = ['claimed', 'processing'];

/** One written transition and the statement that writes it. */
export interface RequestTransition {
  from: RequestState;
  to: RequestState;
  by: string;
  /** No statement writes it yet (see `claimed` above). */
  reserved?: true;
}

/**
 * Every transition a statement writes. test/store/request-transitions.test.ts checks the database's
 * guard (the terminal-row trigger) against it: a change out of a terminal state is refused unless
 * it is listed here.
 */
export const REQUEST_TRANSITIONS: readonly RequestTransition[] = [
  { from: 'pending', to: 'processing', by: 'src/db/sql/queue/claim.ts claimUpdate' },
  { from: 'pending', to: 'claimed', by: 'a daemon holding rows ahead of sending', reserved: true },
  { from: 'claimed', to: 'processing', by: 'a daemon sending a held row', reserved: true },
  { from: 'claimed', to: 'pending', by: 'src/db/sql/queue/reclaim.ts (reclaim, orphans), hand-back' },
  { from: 'processing', to: 'completed', by: 'src/db/sql/queue/complete.ts' },
  { from: 'processing', to: 'failed', by: 'src/db/sql/queue/complete.ts' },
  { from: 'processing', to: 'canceled', by: 'src/db/sql/queue/complete.ts (an aborted attempt)' },
  {
    from: 'processing',
    to: 'pending',
    by: 'src/db/sql/queue/complete.ts (retry, hand-back of a row aborted or never sent), src/db/sql/queue/reclaim.ts',
  },
  { from: 'failed', to: 'pending', by: 'src/db/sql/batches/retry-failed.ts' },
];
