/**
 * The request lifecycle. Every write to a request row is guarded on the state it expects (and, for
 * claimed and processing rows, on the owning daemon and attempt), so a late write from a stale
 * daemon can never overwrite a row that has moved on, and never a terminal row.
 *
 *   pending ──claim──▶ claimed ──mark sent──▶ processing ──2xx──────────────▶ completed
 *      ▲                  │                       ├──final error / retries spent─▶ failed
 *      │                  │                       ├──batch cancelled (abort)──────▶ canceled
 *      └──retriable error (attempt+1, not_before) ┘
 *      └──lease expired / daemon dead / graceful hand-back (claimed or processing)
 *   failed ──retryFailedRequests──▶ pending (attempt reset)
 *
 * Reads: a pending row under a cancelled or expired batch *reads* as canceled (batch_cancelled or
 * batch_expired) without having been rewritten: cancelling is one update of the batch row.
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

/** Allowed transitions: the guard every state write in the store enforces with `WHERE state = ...`. */
export const TRANSITIONS: Readonly<Record<RequestState, readonly RequestState[]>> = {
  pending: ['claimed', 'canceled'],
  claimed: ['processing', 'pending', 'canceled'],
  processing: ['completed', 'failed', 'pending', 'canceled'],
  completed: [],
  failed: ['pending'],
  canceled: [],
};

export function isTerminal(state: RequestState): boolean {
  return TERMINAL_STATES.includes(state);
}

export function canTransition(from: RequestState, to: RequestState): boolean {
  return TRANSITIONS[from].includes(to);
}
