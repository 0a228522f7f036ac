import {
  type AttemptOutcome,
  type BackoffPolicy,
  classifyOutcome,
  decideRetry,
  extractUsage,
} from '../domain/retry.js';

/** Why the daemon aborted an attempt itself (as opposed to the upstream failing it). */
export type AbortReason = 'timeout' | 'cancelled' | 'expired' | 'shutdown';

/** One row write for complete.ts: the new state of a request after an attempt. */
export interface ResultWrite {
  id: string;
  batchId: string;
  model: string;
  attempt: number;
  state: 'completed' | 'failed' | 'canceled' | 'pending';
  notBefore: Date | null;
  status: number | null;
  body: string | null;
  upstreamId: string | null;
  errorCode: string | null;
  errorMessage: string | null;
  inputTokens: number | null;
  outputTokens: number | null;
  totalTokens: number | null;
  /** Hand-back at shutdown: the attempt is not counted and the last error is kept. */
  giveBack: boolean;
  /** For metrics and logs: why a retry or failure happened. */
  reason: string | null;
}

export interface SettleInput {
  id: string;
  batchId: string;
  model: string;
  attempt: number;
  /** Batch deadline (epoch ms): no retry is scheduled past it. */
  deadline: number;
}

const SNIPPET = 300;

function base(row: SettleInput): Omit<ResultWrite, 'state' | 'reason'> {
  return {
    id: row.id,
    batchId: row.batchId,
    model: row.model,
    attempt: row.attempt,
    notBefore: null,
    status: null,
    body: null,
    upstreamId: null,
    errorCode: null,
    errorMessage: null,
    inputTokens: null,
    outputTokens: null,
    totalTokens: null,
    giveBack: false,
  };
}

/**
 * What to write after an attempt. A retriable failure with retries left becomes pending at
 * not_before (lesson 7: not shown as failed), carrying the attempt's error as the last error.
 */
export function settleAttempt(
  row: SettleInput,
  outcome: AttemptOutcome,
  aborted: AbortReason | null,
  policy: BackoffPolicy,
  now: number = Date.now(),
  random: () => number = Math.random,
): ResultWrite {
  const b = base(row);
  if (aborted === 'cancelled') {
    return {
      ...b,
      state: 'canceled',
      errorCode: 'batch_cancelled',
      errorMessage: 'The batch was cancelled while this request was in flight.',
      reason: 'batch_cancelled',
    };
  }
  if (aborted === 'expired') {
    return {
      ...b,
      state: 'canceled',
      errorCode: 'batch_expired',
      errorMessage: 'The completion window expired while this request was in flight.',
      reason: 'batch_expired',
    };
  }
  if (aborted === 'shutdown') return { ...b, state: 'pending', giveBack: true, reason: 'shutdown' };
  if (aborted === 'timeout') {
    outcome = { kind: 'error', code: 'request_timeout', message: 'the upstream did not answer in time' };
  }

  let verdict: ReturnType<typeof classifyOutcome>;
  let parsedOk: unknown;
  // A 2xx is classified here, by parsing its body once (classifyOutcome would parse it too).
  if (outcome.kind !== 'http' || outcome.status < 200 || outcome.status >= 300)
    verdict = classifyOutcome(outcome);
  else {
    try {
      parsedOk = JSON.parse(outcome.body);
      verdict = 'success';
    } catch {
      verdict = 'retriable';
    }
  }

  if (outcome.kind === 'http') {
    const http = { ...b, status: outcome.status, body: outcome.body, upstreamId: outcome.upstreamRequestId };
    if (verdict === 'success') {
      const usage = extractUsage(parsedOk);
      return { ...http, state: 'completed', ...usage, reason: null };
    }
    const code = outcome.status < 300 ? 'invalid_response' : `http_${outcome.status}`;
    const message = `upstream answered ${outcome.status}: ${outcome.body.slice(0, SNIPPET)}`;
    if (verdict === 'retriable') {
      const decision = decideRetry(row.attempt, outcome.retryAfterMs, row.deadline, policy, now, random);
      if (decision.retry) {
        return {
          ...http,
          state: 'pending',
          notBefore: new Date(decision.notBefore),
          errorCode: code,
          errorMessage: message,
          reason: code,
        };
      }
    }
    // Final: the upstream's status and body are the diagnosis (error files carry them).
    return {
      ...http,
      state: 'failed',
      errorCode: outcome.status < 300 ? code : null,
      errorMessage: outcome.status < 300 ? message : null,
      reason: code,
    };
  }

  const err = { ...b, errorCode: outcome.code, errorMessage: outcome.message, reason: outcome.code };
  if (verdict === 'final') return { ...err, state: 'failed' };
  const decision = decideRetry(row.attempt, null, row.deadline, policy, now, random);
  if (decision.retry) return { ...err, state: 'pending', notBefore: new Date(decision.notBefore) };
  return { ...err, state: 'failed' };
}
