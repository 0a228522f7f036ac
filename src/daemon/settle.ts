import {
  type AttemptOutcome,
  type BackoffPolicy,
  decideRetry,
  overruleVerdict,
  type RetryRules,
  type ShouldRetry,
  statusVerdict,
  upstreamErrorMessage,
  type Verdict,
} from '../domain/retry.js';
import { extractUsage, type Usage } from '../domain/usage.js';

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
  cachedTokens: number | null;
  outputTokens: number | null;
  reasoningTokens: number | null;
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
  /** Batch deadline (epoch ms; Infinity for none): no retry is scheduled past it. */
  deadline: number;
  /** For the shouldRetry hook. */
  customId?: string | null;
  /** The template takes any answer (its contentType is not JSON): a 2xx completes whatever its body. */
  anyBody?: boolean;
  /** Told when the shouldRetry hook throws. */
  onHookError?: (err: unknown) => void;
  /**
   * The model is paced by requests/tokens-per-minute limits (configured or learned): a 429 with a
   * hint is the pacing's miss, not the request's failure (see rateLimitedWrite).
   */
  paced?: boolean;
}

const SNIPPET = 300;

/**
 * The first SNIPPET UTF-16 units of a body, never ending in half a surrogate pair: the writes go to
 * PostgreSQL as JSON (complete.ts), which refuses a lone surrogate's escape.
 */
function snippet(body: string): string {
  if (body.length <= SNIPPET) return body;
  const last = body.charCodeAt(SNIPPET - 1);
  return body.slice(0, last >= 0xd800 && last <= 0xdbff ? SNIPPET - 1 : SNIPPET);
}

/**
 * Text as PostgreSQL can store it: a text value cannot hold U+0000 (nor can the JSON the writes
 * travel in), and one such body would fail the whole batched write statement, again and again,
 * holding up every row in it. A NUL is replaced by U+FFFD (a JSON body cannot contain a raw NUL, so
 * a 2xx with one already fails as invalid_response). includes() is a native scan: no cost otherwise.
 */
function storable(text: string | null): string | null {
  return text?.includes('\u0000') ? text.replaceAll('\u0000', '\ufffd') : text;
}

/**
 * One write, built as a single object literal of a fixed shape: settleAttempt runs once per
 * request, and spreading partial objects instead costs ≈9 µs a request, which was the
 * largest self time of the daemon's own code in a CPU profile of bench/daemon-throughput.
 */
function write(
  row: SettleInput,
  state: ResultWrite['state'],
  reason: string | null,
  status: number | null,
  body: string | null,
  upstreamId: string | null,
  errorCode: string | null,
  errorMessage: string | null,
  notBefore: Date | null = null,
  usage: Usage | null = null,
  giveBack = false,
): ResultWrite {
  return {
    id: row.id,
    batchId: row.batchId,
    model: row.model,
    attempt: row.attempt,
    state,
    notBefore,
    status,
    body: storable(body),
    upstreamId,
    errorCode,
    errorMessage: storable(errorMessage),
    inputTokens: usage === null ? null : usage.inputTokens,
    cachedTokens: usage === null ? null : usage.cachedTokens,
    outputTokens: usage === null ? null : usage.outputTokens,
    reasoningTokens: usage === null ? null : usage.reasoningTokens,
    totalTokens: usage === null ? null : usage.totalTokens,
    giveBack,
    reason,
  };
}

/**
 * A hand-back: the row goes back to pending as it was before its claim (the attempt is not counted,
 * the last error kept). For an attempt aborted at shutdown, and for a row claimed but never sent.
 */
export function handBackWrite(row: SettleInput): ResultWrite {
  return write(row, 'pending', 'shutdown', null, null, null, null, null, null, null, true);
}

/**
 * A 429 (not insufficient_quota: that is final before this is asked) on a model paced by rate
 * limits, or one whose answer carries the provider's limit headers, with a hint: the request goes
 * back to pending at the hint and its attempt is not counted (issue 11: the 429 costs no retry; the
 * whole model pauses, see src/db/sql/queue/rate-budget.ts). Past the batch's deadline it is an ordinary
 * retriable failure. Null otherwise: a 429 with no hint, or from an upstream that sends no limit
 * headers for a model without rate limits, is retried as any other.
 */
export function rateLimitedWrite(
  row: SettleInput,
  outcome: AttemptOutcome,
  now: number = Date.now(),
): ResultWrite | null {
  if (outcome.kind !== 'http' || outcome.status !== 429 || outcome.retryAfterMs === null) return null;
  const info = outcome.rateLimit;
  const limited =
    row.paced === true ||
    (info != null &&
      (info.requests !== null ||
        info.tokens !== null ||
        info.inputTokens !== null ||
        info.outputTokens !== null));
  if (!limited) return null;
  const notBefore = now + Math.ceil(outcome.retryAfterMs);
  if (notBefore >= row.deadline) return null;
  return write(row, 'pending', 'rate_limited', null, null, null, null, null, new Date(notBefore), null, true);
}

/**
 * What to write after an attempt. A retriable failure with retries left becomes pending at
 * not_before (rule 7 of docs/decisions/0003: not shown as failed), carrying the attempt's error as the last error.
 */
export function settleAttempt(
  row: SettleInput,
  outcome: AttemptOutcome,
  aborted: AbortReason | null,
  policy: BackoffPolicy & Partial<RetryRules>,
  now: number = Date.now(),
  random: () => number = Math.random,
): ResultWrite {
  if (aborted === 'cancelled') {
    const code = 'batch_cancelled';
    const message = 'The batch was cancelled while this request was in flight.';
    return write(row, 'canceled', code, null, null, null, code, message);
  }
  if (aborted === 'expired') {
    const code = 'batch_expired';
    const message = 'The completion window expired while this request was in flight.';
    return write(row, 'canceled', code, null, null, null, code, message);
  }
  if (aborted === 'shutdown') return handBackWrite(row);
  if (aborted === 'timeout') {
    outcome = { kind: 'error', code: 'request_timeout', message: 'the upstream did not answer in time' };
  }

  const hook = policy.shouldRetry;
  const said = hook ? askHook(hook, outcome, row) : undefined;
  if (outcome.kind === 'http') {
    const { status, body, upstreamRequestId } = outcome;
    let verdict: Verdict;
    let parsedOk: unknown;
    // A 2xx is classified here, by parsing its body once (statusVerdict would parse it too).
    if (status < 200 || status >= 300) verdict = statusVerdict(outcome, policy.retryableStatuses);
    else if (row.anyBody) {
      // Any answer completes; one that is JSON may still report usage.
      verdict = 'success';
      if (body.charCodeAt(0) === 0x7b) {
        try {
          parsedOk = JSON.parse(body);
        } catch {
          // text that starts with a brace
        }
      }
    } else {
      try {
        parsedOk = JSON.parse(body);
        verdict = 'success';
      } catch {
        verdict = 'retriable';
      }
    }
    const checked = verdict;
    if (said !== undefined) verdict = overruleVerdict(verdict, said);
    if (verdict === 'success') {
      return write(
        row,
        'completed',
        null,
        status,
        body,
        upstreamRequestId,
        null,
        null,
        null,
        extractUsage(parsedOk),
      );
    }
    // A 2xx failed its content check, or the caller's hook rejected it; any other status carries
    // the upstream's own explanation.
    const code =
      status >= 300 ? `http_${status}` : checked === 'success' ? 'rejected_response' : 'invalid_response';
    const message =
      status >= 300
        ? upstreamErrorMessage(status, body)
        : checked === 'success'
          ? `shouldRetry rejected the ${status} answer`
          : `upstream answered ${status}: ${snippet(body)}`;
    if (verdict === 'retriable') {
      const paused = rateLimitedWrite(row, outcome, now);
      if (paused) return paused;
      const decision = decideRetry(row.attempt, outcome.retryAfterMs, row.deadline, policy, now, random);
      if (decision.retry) {
        return write(
          row,
          'pending',
          code,
          status,
          body,
          upstreamRequestId,
          code,
          message,
          new Date(decision.notBefore),
        );
      }
    }
    // Final: the upstream's status and body are the diagnosis (error files carry them).
    return write(
      row,
      'failed',
      code,
      status,
      body,
      upstreamRequestId,
      status < 300 ? code : null,
      status < 300 ? message : null,
    );
  }

  const { code, message } = outcome;
  const verdict = overruleVerdict(statusVerdict(outcome), said);
  if (verdict === 'final') return write(row, 'failed', code, null, null, null, code, message);
  const decision = decideRetry(row.attempt, null, row.deadline, policy, now, random);
  if (decision.retry) {
    return write(row, 'pending', code, null, null, null, code, message, new Date(decision.notBefore));
  }
  return write(row, 'failed', code, null, null, null, code, message);
}

/**
 * The caller's shouldRetry verdict. A hook that throws or answers something else is ignored (the
 * status rules decide) rather than lose the attempt's write; the daemon logs it (dispatcher.ts).
 */
function askHook(hook: ShouldRetry, outcome: AttemptOutcome, row: SettleInput): boolean | undefined {
  try {
    const said = hook(outcome, { model: row.model, attempt: row.attempt, customId: row.customId ?? null });
    return said === true || said === false ? said : undefined;
  } catch (err) {
    row.onHookError?.(err);
    return undefined;
  }
}
