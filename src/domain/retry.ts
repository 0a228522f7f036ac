/**
 * Retry policy (pure): what one attempt's outcome means for its request, and when to try again.
 * REFERENCE §3: connection errors, resets, timeouts, 408, 429 (except insufficient_quota), 500, 502,
 * 503, 504 and 529 are retriable; other statuses are final and their body is the user's diagnosis.
 */

/** The result of one HTTP attempt, as the daemon's upstream client reports it. */
export type AttemptOutcome =
  | {
      kind: 'http';
      status: number;
      body: string;
      upstreamRequestId: string | null;
      /** Server hint from retry-after-ms, else retry-after (seconds or HTTP date), in ms. */
      retryAfterMs: number | null;
    }
  | {
      kind: 'error';
      /** request_timeout, connection_error, … */
      code: string;
      message: string;
    };

const RETRIABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504, 529]);
/** Non-HTTP failures no retry can fix (a malformed upstream URL). */
const FINAL_ERROR_CODES = new Set(['invalid_endpoint']);

/** Whether the body says the account is out of quota (a 429 that no retry can fix). */
export function isInsufficientQuota(body: string): boolean {
  if (!body.includes('insufficient_quota')) return false;
  try {
    const error = (JSON.parse(body) as { error?: { code?: unknown; type?: unknown } }).error;
    return error?.code === 'insufficient_quota' || error?.type === 'insufficient_quota';
  } catch {
    return true;
  }
}

/** Whether a body is JSON (a 2xx answer that is not, e.g. a proxy's HTML page, is retried). */
export function isJsonBody(body: string): boolean {
  try {
    JSON.parse(body);
    return true;
  } catch {
    return false;
  }
}

export type Verdict = 'success' | 'retriable' | 'final';

export function classifyOutcome(outcome: AttemptOutcome): Verdict {
  if (outcome.kind === 'error') return FINAL_ERROR_CODES.has(outcome.code) ? 'final' : 'retriable';
  const { status, body } = outcome;
  if (status >= 200 && status < 300) return isJsonBody(body) ? 'success' : 'retriable';
  if (status === 429 && isInsufficientQuota(body)) return 'final';
  return RETRIABLE_STATUSES.has(status) ? 'retriable' : 'final';
}

/**
 * The server's retry hint in ms: `retry-after-ms` wins, else `retry-after` as seconds or an HTTP
 * date. Null when absent or unparsable.
 */
export function parseRetryAfter(
  retryAfterMs: string | null | undefined,
  retryAfter: string | null | undefined,
  now: number = Date.now(),
): number | null {
  if (retryAfterMs != null && retryAfterMs.trim() !== '') {
    const ms = Number(retryAfterMs);
    if (Number.isFinite(ms) && ms >= 0) return ms;
  }
  if (retryAfter != null && retryAfter.trim() !== '') {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  return null;
}

export interface BackoffPolicy {
  /** Retries after the first attempt. */
  maxRetries: number;
  backoffMs: number;
  backoffFactor: number;
  maxBackoffMs: number;
}

export type RetryDecision =
  | { retry: true; notBefore: number }
  /** No retry: out of attempts, or the next try would land past the batch's deadline. */
  | { retry: false; reason: 'retries_exhausted' | 'deadline' };

/**
 * Decides the next attempt after a retriable failure of attempt number `attempt` (1-based).
 * Full jitter: random(0, min(maxBackoffMs, backoffMs·factor^(attempt-1))), never below the server's
 * hint, and never scheduled past `deadline` (epoch ms).
 */
export function decideRetry(
  attempt: number,
  retryAfterMs: number | null,
  deadline: number,
  policy: BackoffPolicy,
  now: number = Date.now(),
  random: () => number = Math.random,
): RetryDecision {
  if (attempt > policy.maxRetries) return { retry: false, reason: 'retries_exhausted' };
  const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * policy.backoffFactor ** (attempt - 1));
  const delay = Math.max(random() * ceiling, retryAfterMs ?? 0);
  const notBefore = now + Math.ceil(delay);
  if (notBefore >= deadline) return { retry: false, reason: 'deadline' };
  return { retry: true, notBefore };
}

/** Token counts from an OpenAI-style usage block (chat uses prompt/completion, responses input/output). */
export interface Usage {
  inputTokens: number | null;
  outputTokens: number | null;
  totalTokens: number | null;
}

function int(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 2_147_483_647
    ? value
    : null;
}

export function extractUsage(parsedBody: unknown): Usage {
  const usage = (parsedBody as { usage?: Record<string, unknown> } | null)?.usage;
  if (!usage || typeof usage !== 'object')
    return { inputTokens: null, outputTokens: null, totalTokens: null };
  const input = int(usage.input_tokens) ?? int(usage.prompt_tokens);
  const output = int(usage.output_tokens) ?? int(usage.completion_tokens);
  const total =
    int(usage.total_tokens) ?? (input !== null || output !== null ? (input ?? 0) + (output ?? 0) : null);
  return { inputTokens: input, outputTokens: output, totalTokens: total };
}
