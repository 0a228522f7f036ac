/**
 * Rate-limit headers as upstreams send them (OpenAI's x-ratelimit-*, Anthropic's anthropic-ratelimit-*, retry-after), parsed into one shape. Pure.
 *
 *   OpenAI     x-ratelimit-{limit,remaining,reset}-{requests,tokens}; resets are Go durations
 *              (`1s`, `6m0s`, `120ms`, `2s81ms`, `1h2m3.5s`).
 *   Anthropic  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset};
 *              resets are RFC 3339 instants.
 *   Both       retry-after-ms (milliseconds), retry-after (seconds or an HTTP date).
 *
 * A reset is returned as milliseconds from `now`. A window is present when any of its three headers
 * parsed; an unparsable value reads as absent (an upstream's typo must not stop the daemon).
 */
import { parseRetryAfter } from './retry.js';

/** Where an upstream says one limit stands (per minute for OpenAI and Anthropic). */
export interface RateLimitWindow {
  /** The limit (requests or tokens per window). */
  limit: number | null;
  /** What is left now, after this request was counted. */
  remaining: number | null;
  /** Milliseconds until the window is full again (OpenAI) or resets (Anthropic). */
  resetMs: number | null;
}

export interface RateLimitInfo {
  requests: RateLimitWindow | null;
  /** Tokens (OpenAI's TPM; Anthropic's combined `tokens`, the most restrictive of its limits). */
  tokens: RateLimitWindow | null;
  /** Anthropic's input-tokens limit (ITPM). */
  inputTokens: RateLimitWindow | null;
  /** Anthropic's output-tokens limit (OTPM). */
  outputTokens: RateLimitWindow | null;
  /** The server's hint: retry-after-ms, else retry-after; null when neither parsed. */
  retryAfterMs: number | null;
}

/** Reads one header by lower-case name (undefined or null when absent). */
export type HeaderLookup = (name: string) => string | null | undefined;

const GO_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const GO_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * A Go duration (time.Duration's String form: `6m0s`, `2s81ms`, `120ms`, `1.5s`, `0s`) in ms.
 * A bare number is read as seconds (some proxies send that). Null when it does not parse.
 */
export function parseGoDuration(value: string | null | undefined): number | null {
  if (value == null) return null;
  const s = value.trim();
  if (s === '') return null;
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  if (s === '0') return 0;
  GO_PART.lastIndex = 0;
  let ms = 0;
  let pos = 0;
  while (pos < s.length) {
    GO_PART.lastIndex = pos;
    const m = GO_PART.exec(s);
    if (!m) return null;
    ms += Number(m[1]) * GO_UNITS[m[2]!]!;
    pos = GO_PART.lastIndex;
  }
  return Number.isFinite(ms) ? ms : null;
}

/** An RFC 3339 instant (Anthropic's resets) as ms from `now` (0 when past). */
export function parseResetInstant(value: string | null | undefined, now: number): number | null {
  if (value == null || value.trim() === '') return null;
  const t = Date.parse(value.trim());
  return Number.isNaN(t) ? null : Math.max(0, t - now);
}

function count(value: string | null | undefined): number | null {
  if (value == null) return null;
  const s = value.trim();
  if (!/^\d+(\.\d+)?$/.test(s)) return null;
  const n = Number(s);
  return Number.isFinite(n) ? n : null;
}

function window(
  limit: number | null,
  remaining: number | null,
  resetMs: number | null,
): RateLimitWindow | null {
  return limit === null && remaining === null && resetMs === null ? null : { limit, remaining, resetMs };
}

/**
 * Parses every rate-limit header an answer carries. Returns null when the answer has none of them
 * (an upstream that sends no such headers: the daemon then behaves exactly as without this code).
 * Where OpenAI's and Anthropic's headers both appear (a proxy), OpenAI's win.
 */
export function parseRateLimitHeaders(get: HeaderLookup, now: number = Date.now()): RateLimitInfo | null {
  const openai = (kind: 'requests' | 'tokens') =>
    window(
      count(get(`x-ratelimit-limit-${kind}`)),
      count(get(`x-ratelimit-remaining-${kind}`)),
      parseGoDuration(get(`x-ratelimit-reset-${kind}`)),
    );
  const anthropic = (kind: string) =>
    window(
      count(get(`anthropic-ratelimit-${kind}-limit`)),
      count(get(`anthropic-ratelimit-${kind}-remaining`)),
      parseResetInstant(get(`anthropic-ratelimit-${kind}-reset`), now),
    );
  const info: RateLimitInfo = {
    requests: openai('requests') ?? anthropic('requests'),
    tokens: openai('tokens') ?? anthropic('tokens'),
    inputTokens: anthropic('input-tokens'),
    outputTokens: anthropic('output-tokens'),
    retryAfterMs: parseRetryAfter(get('retry-after-ms'), get('retry-after'), now),
  };
  return info.requests || info.tokens || info.inputTokens || info.outputTokens || info.retryAfterMs !== null
    ? info
    : null;
}

/** Whether a lower-case header name is one parseRateLimitHeaders reads (to collect them in one pass). */
export function isRateLimitHeader(name: string): boolean {
  return (
    name.startsWith('x-ratelimit-') ||
    name.startsWith('anthropic-ratelimit-') ||
    name === 'retry-after' ||
    name === 'retry-after-ms'
  );
}

/**
 * The window the token budget paces by: OpenAI's tokens, Anthropic's combined tokens, else its
 * input tokens (what fusillade's estimate counts most of).
 */
export function tokenWindow(info: RateLimitInfo): RateLimitWindow | null {
  return info.tokens ?? info.inputTokens;
}
