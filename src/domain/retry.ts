import { STATUS_CODES } from 'node:http';
import type { RateLimitInfo } from './rate-limit-headers.js';

/**
 * Retry policy (pure): what one attempt's outcome means for its request, and when to try again.
 * OpenAI and Anthropic document as transient: connection errors, resets, timeouts, 408, 429 (except insufficient_quota), 500, 502,
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
      /** The answer's rate-limit headers, parsed (absent or null when it carried none). */
      rateLimit?: RateLimitInfo | null;
    }
  | {
      kind: 'error';
      /** request_timeout, connection_error, … */
      code: string;
      message: string;
    };

/** The HTTP statuses retried by default (those OpenAI and Anthropic document as transient). */
export const DEFAULT_RETRYABLE_STATUSES: readonly number[] = [408, 429, 500, 502, 503, 504, 529];
const DEFAULT_STATUS_SET: ReadonlySet<number> = new Set(DEFAULT_RETRYABLE_STATUSES);
/**
 * Non-HTTP failures no retry can fix: a malformed upstream URL; an answer over maxResponseBytes
 * (sending it again would fetch up to the cap again for the same end); a template's sealed key that
 * does not open with the daemon's key-encryption key (altered in the table).
 */
export const FINAL_ERROR_CODES: ReadonlySet<string> = new Set([
  'invalid_endpoint',
  'response_too_large',
  'key_decryption_failed',
]);

/**
 * The code a stored final failure is grouped and filtered by: the error code for a failure without
 * a usable answer (request_timeout, connection_error, invalid_response, …), this code for a 429 out
 * of quota, else the HTTP status as text ("400", "503").
 */
export const INSUFFICIENT_QUOTA_CODE = 'insufficient_quota';

/**
 * Whether a request that failed with this failure code could succeed if sent again, by the status
 * rules (a shouldRetry hook cannot be asked about a stored failure): a retryable status, or a
 * non-HTTP error other than FINAL_ERROR_CODES; never a 429 out of quota.
 */
export function isRetriableFailureCode(
  code: string,
  statuses: ReadonlySet<number> = DEFAULT_STATUS_SET,
): boolean {
  if (/^[0-9]+$/.test(code)) return statuses.has(Number(code));
  return code !== INSUFFICIENT_QUOTA_CODE && !FINAL_ERROR_CODES.has(code);
}

/**
 * Which HTTP statuses are retried: a list replaces the defaults (`[500, 503]`); `{ add, remove }`
 * edits them (`{ add: [404] }` retries 404 too, `{ remove: [500] }` makes 500 final).
 */
export type RetryableStatuses = readonly number[] | { add?: readonly number[]; remove?: readonly number[] };

/** What a shouldRetry hook is told besides the outcome. */
export interface ShouldRetryContext {
  model: string;
  /** 1 for the first attempt. */
  attempt: number;
  customId: string | null;
}

/**
 * A caller's retry rule, asked after every attempt the daemon did not abort itself (cancel,
 * deadline, shutdown): true retries it (while retries and the deadline allow, then it fails),
 * false never retries it (a failure is final; a good answer completes), undefined leaves the
 * decision to the status rules. A 2xx it rejects is retried as `rejected_response`.
 */
export type ShouldRetry = (outcome: AttemptOutcome, request: ShouldRetryContext) => boolean | undefined;

/** The retry rules a daemon applies: resolved once at start. */
export interface RetryRules {
  retryableStatuses: ReadonlySet<number>;
  shouldRetry?: ShouldRetry | undefined;
}

export const DEFAULT_RETRY_RULES: RetryRules = { retryableStatuses: DEFAULT_STATUS_SET };

/** Checks a RetryableStatuses setting; returns the problem, or null when it is valid. */
export function retryableStatusesProblem(spec: unknown): string | null {
  const isStatus = (v: unknown) => Number.isInteger(v) && (v as number) >= 100 && (v as number) <= 599;
  const list = (v: unknown) => Array.isArray(v) && v.every(isStatus);
  if (Array.isArray(spec)) return list(spec) ? null : 'must list HTTP statuses (integers 100-599)';
  if (spec === null || typeof spec !== 'object') {
    return 'must be a list of HTTP statuses, or {"add": [...], "remove": [...]}';
  }
  for (const [k, v] of Object.entries(spec)) {
    if (k !== 'add' && k !== 'remove') return `has an unknown field "${k}" (known: add, remove)`;
    if (!list(v)) return `.${k} must list HTTP statuses (integers 100-599)`;
  }
  return null;
}

/** The set of retried statuses for a setting (undefined: the defaults). */
export function resolveRetryableStatuses(spec: RetryableStatuses | undefined): ReadonlySet<number> {
  if (spec === undefined) return DEFAULT_STATUS_SET;
  const problem = retryableStatusesProblem(spec);
  if (problem !== null) throw new TypeError(`retryableStatuses ${problem}`);
  if (Array.isArray(spec)) return new Set(spec as readonly number[]);
  const edit = spec as { add?: readonly number[]; remove?: readonly number[] };
  const set = new Set(DEFAULT_RETRYABLE_STATUSES);
  for (const s of edit.add ?? []) set.add(s);
  for (const s of edit.remove ?? []) set.delete(s);
  return set;
}

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

/**
 * What an attempt's outcome means by the status rules: a 2xx succeeds (when `expectJson`, only if
 * its body is JSON; else it is retried), a retryable status or a non-HTTP error is retried (not a
 * 429 out of quota, nor an invalid endpoint), anything else is final.
 */
export function statusVerdict(
  outcome: AttemptOutcome,
  statuses: ReadonlySet<number> = DEFAULT_STATUS_SET,
  expectJson = true,
): Verdict {
  if (outcome.kind === 'error') return FINAL_ERROR_CODES.has(outcome.code) ? 'final' : 'retriable';
  const { status, body } = outcome;
  if (status >= 200 && status < 300) return !expectJson || isJsonBody(body) ? 'success' : 'retriable';
  if (status === 429 && isInsufficientQuota(body)) return 'final';
  return statuses.has(status) ? 'retriable' : 'final';
}

/** The caller's hook, if any, over the status rules' verdict (see ShouldRetry). */
export function overruleVerdict(verdict: Verdict, said: boolean | undefined): Verdict {
  if (said === true) return 'retriable';
  if (said === false && verdict === 'retriable') return 'final';
  return verdict;
}

/** The verdict of the rules (status rules, then the hook). */
export function classifyOutcome(
  outcome: AttemptOutcome,
  rules: RetryRules = DEFAULT_RETRY_RULES,
  context: ShouldRetryContext = { model: '', attempt: 1, customId: null },
  expectJson = true,
): Verdict {
  const verdict = statusVerdict(outcome, rules.retryableStatuses, expectJson);
  return rules.shouldRetry ? overruleVerdict(verdict, rules.shouldRetry(outcome, context)) : verdict;
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

/** Longest error message kept from an upstream's answer (UTF-16 units). */
export const MESSAGE_CHARS = 1000;

/**
 * The first `max` UTF-16 units of a text, never ending in half a surrogate pair: messages travel to
 * PostgreSQL as JSON (src/db/sql/queue/complete.ts), which refuses a lone surrogate's escape.
 */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/**
 * The upstream's own explanation of an answer it failed: the `message` of an OpenAI
 * (`{"error":{"message"}}`) or Anthropic (`{"type":"error","error":{"message"}}`) error envelope,
 * else of the common variants (`{"error":"…"}`, `{"message":"…"}`, FastAPI's `{"detail":"…"}`),
 * else the status and its text followed by the start of the body (`502 Bad Gateway: <html>…`).
 */
export function upstreamErrorMessage(status: number, body: string): string {
  const text = body.trim();
  if (text.startsWith('{')) {
    try {
      const parsed = JSON.parse(text) as Record<string, unknown>;
      const error = parsed.error as Record<string, unknown> | string | undefined;
      const found =
        (typeof error === 'object' && error !== null ? error.message : undefined) ??
        (typeof error === 'string' ? error : undefined) ??
        parsed.message ??
        parsed.detail;
      if (typeof found === 'string' && found.trim() !== '') return clip(found.trim(), MESSAGE_CHARS);
    } catch {
      // not JSON: described by its status and start below
    }
  }
  const head = `${status}${STATUS_CODES[status] ? ` ${STATUS_CODES[status]}` : ''}`;
  return text === '' ? head : `${head}: ${clip(text, 300).replace(/\s+/g, ' ')}`;
}
