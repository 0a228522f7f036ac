import {
  type Bucket,
  type BucketLimit,
  fullBucket,
  refill,
  resetMs,
  waitMs,
} from '../domain/token-bucket.js';
import { estimateTokenCost } from '../domain/token-cost.js';

/**
 * The mock upstream's rate limits, enforced as a provider does (OpenAI's and Anthropic's documented limits): per model, requests
 * and tokens per minute as continuously refilled buckets; a request's tokens are counted at
 * admission as the prompt's characters / 4 plus its requested maximum output (the usage it later
 * reports does not matter). Every answer carries the limit headers; an answer over either limit is a
 * 429 with retry-after-ms (and retry-after in whole seconds) saying when both buckets hold it, and
 * the request is not counted.
 */
export interface MockRateLimits {
  /** Requests per minute per model (unset: unlimited). */
  rpm?: number;
  /** Tokens per minute per model (unset: unlimited). */
  tpm?: number;
  /** Bucket capacity in seconds of refill (default 60: a full minute, as OpenAI). */
  burstSeconds?: number;
  /** Output tokens counted for a request that names no maximum (default 256). */
  defaultMaxOutputTokens?: number;
  /** Which headers to send: OpenAI's x-ratelimit-*, Anthropic's anthropic-ratelimit-*, or none (only retry-after on a 429). */
  headers?: 'openai' | 'anthropic' | 'none';
}

/** Counts of one model, since the limiter started (or was reset). */
export interface MockRateStats {
  admitted: number;
  admittedTokens: number;
  throttled: number;
  /** Per second since `startedAt`: requests admitted, tokens admitted, requests refused. */
  perSecond: { admitted: number; tokens: number; throttled: number }[];
}

interface ModelState {
  requests: Bucket;
  tokens: Bucket;
  stats: MockRateStats;
}

export type Admission =
  | { ok: true; headers: Record<string, string> }
  | { ok: false; headers: Record<string, string>; body: string };

/** Go's time.Duration String form (what OpenAI's reset headers use): 1m30s, 2s81ms, 120ms. */
export function goDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return '0s';
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  const sec = `${Number.isInteger(s) ? s : s.toFixed(3).replace(/0+$/, '')}s`;
  return h > 0 ? `${h}h${m}m${sec}` : m > 0 ? `${m}m${sec}` : sec;
}

export class MockRateLimiter {
  private readonly models = new Map<string, ModelState>();
  private startedAt = Date.now();
  private readonly requestLimit: BucketLimit | null;
  private readonly tokenLimit: BucketLimit | null;
  private readonly defaultMaxOutputTokens: number;
  readonly headerStyle: 'openai' | 'anthropic' | 'none';

  constructor(readonly options: MockRateLimits) {
    const burst = (options.burstSeconds ?? 60) / 60;
    const limit = (perMinute: number | undefined): BucketLimit | null =>
      perMinute === undefined || perMinute <= 0
        ? null
        : { perMinute, capacity: Math.max(1, Math.round(perMinute * burst)) };
    this.requestLimit = limit(options.rpm);
    this.tokenLimit = limit(options.tpm);
    this.defaultMaxOutputTokens = options.defaultMaxOutputTokens ?? 256;
    this.headerStyle = options.headers ?? 'openai';
  }

  /** Tokens the mock counts for a request (the prompt's characters / 4 plus its maximum output). */
  cost(body: string, path: string): number {
    return estimateTokenCost(body, path, { defaultMaxOutputTokens: this.defaultMaxOutputTokens });
  }

  private state(model: string, now: number): ModelState {
    let s = this.models.get(model);
    if (!s) {
      s = {
        requests: this.requestLimit ? fullBucket(this.requestLimit, now) : { level: 0, at: now },
        tokens: this.tokenLimit ? fullBucket(this.tokenLimit, now) : { level: 0, at: now },
        stats: { admitted: 0, admittedTokens: 0, throttled: 0, perSecond: [] },
      };
      this.models.set(model, s);
    }
    return s;
  }

  private second(s: ModelState, now: number) {
    const i = Math.max(0, Math.floor((now - this.startedAt) / 1000));
    const p = s.stats.perSecond;
    while (p.length <= i) p.push({ admitted: 0, tokens: 0, throttled: 0 });
    return p[i]!;
  }

  /** Admits (and counts) one request of `model` costing `tokens`, or refuses it with a 429's body. */
  admit(model: string, tokens: number, now: number = Date.now()): Admission {
    const s = this.state(model, now);
    const rl = this.requestLimit;
    const tl = this.tokenLimit;
    if (rl) s.requests = refill(s.requests, rl, now);
    if (tl) s.tokens = refill(s.tokens, tl, now);
    const requestWait = rl ? waitMs(s.requests, 1, rl, now) : 0;
    const tokenWait = tl ? waitMs(s.tokens, tokens, tl, now) : 0;
    if (requestWait > 0 || tokenWait > 0) {
      s.stats.throttled++;
      this.second(s, now).throttled++;
      const wait = Math.max(requestWait, tokenWait);
      const kind = tokenWait >= requestWait ? 'tokens' : 'requests';
      const limit = kind === 'tokens' ? tl! : rl!;
      const used = Math.round(limit.capacity - (kind === 'tokens' ? s.tokens : s.requests).level);
      const retry = Number.isFinite(wait) ? wait : 60_000;
      const headers = this.headers(s, now);
      headers['retry-after-ms'] = String(Math.ceil(retry));
      headers['retry-after'] = String(Math.ceil(retry / 1000));
      const body = JSON.stringify({
        error: {
          message: `Rate limit reached for ${model} on ${kind} per min (TPM/RPM): Limit ${limit.perMinute}, Used ${used}, Requested ${kind === 'tokens' ? tokens : 1}. Please try again in ${goDuration(retry)}.`,
          type: kind,
          param: null,
          code: 'rate_limit_exceeded',
        },
      });
      return { ok: false, headers, body };
    }
    if (rl) s.requests = { level: s.requests.level - 1, at: now };
    if (tl) s.tokens = { level: s.tokens.level - tokens, at: now };
    s.stats.admitted++;
    s.stats.admittedTokens += tokens;
    const sec = this.second(s, now);
    sec.admitted++;
    sec.tokens += tokens;
    return { ok: true, headers: this.headers(s, now) };
  }

  /** The rate-limit headers of an answer, in the configured style. */
  private headers(s: ModelState, now: number): Record<string, string> {
    const h: Record<string, string> = {};
    if (this.headerStyle === 'none') return h;
    const put = (kind: 'requests' | 'tokens', b: Bucket, limit: BucketLimit | null) => {
      if (!limit) return;
      const remaining = String(Math.max(0, Math.floor(b.level)));
      const reset = resetMs(b, limit, now);
      if (this.headerStyle === 'openai') {
        h[`x-ratelimit-limit-${kind}`] = String(limit.perMinute);
        h[`x-ratelimit-remaining-${kind}`] = remaining;
        h[`x-ratelimit-reset-${kind}`] = goDuration(reset);
      } else {
        h[`anthropic-ratelimit-${kind}-limit`] = String(limit.perMinute);
        h[`anthropic-ratelimit-${kind}-remaining`] = remaining;
        h[`anthropic-ratelimit-${kind}-reset`] = new Date(now + reset).toISOString();
      }
    };
    put('requests', s.requests, this.requestLimit);
    put('tokens', s.tokens, this.tokenLimit);
    return h;
  }

  /** Counts per model since the start (or the last reset). */
  stats(): { startedAt: number; models: Record<string, MockRateStats> } {
    const models: Record<string, MockRateStats> = {};
    for (const [model, s] of this.models) models[model] = s.stats;
    return { startedAt: this.startedAt, models };
  }

  /** Forgets the counts and refills every bucket. */
  reset(now: number = Date.now()): void {
    this.models.clear();
    this.startedAt = now;
  }
}
