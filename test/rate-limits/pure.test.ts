import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodingForModel, loadTokenCounter } from '../../src/daemon/tokenizer.js';
import { aimdAllowed, aimdSignal, aimdStart, aimdUpdate } from '../../src/domain/adaptive-concurrency.js';
import {
  isRateLimitHeader,
  parseGoDuration,
  parseRateLimitHeaders,
  parseResetInstant,
  tokenWindow,
} from '../../src/domain/rate-limit-headers.js';
import {
  admissible,
  applyGrant,
  demand,
  giveBack,
  limited,
  newWallet,
  reserve,
  settle,
  throttled,
} from '../../src/domain/rate-wallet.js';
import { type Bucket, fullBucket, refill, resetMs, take, waitMs } from '../../src/domain/token-bucket.js';
import { charEstimate, estimateTokenCost, maxOutputTokens, promptText } from '../../src/domain/token-cost.js';

const lookup = (h: Record<string, string>) => (name: string) => h[name];

describe('rate-limit headers', () => {
  it('parses Go durations as OpenAI sends them', () => {
    expect(parseGoDuration('1s')).toBe(1000);
    expect(parseGoDuration('6m0s')).toBe(360_000);
    expect(parseGoDuration('120ms')).toBe(120);
    expect(parseGoDuration('2s81ms')).toBe(2081);
    expect(parseGoDuration('1h2m3.5s')).toBe(3_723_500);
    expect(parseGoDuration('0s')).toBe(0);
    expect(parseGoDuration('1.5s')).toBe(1500);
    expect(parseGoDuration('250us')).toBeCloseTo(0.25);
    expect(parseGoDuration('7')).toBe(7000);
    for (const bad of ['', 's', '1x', '1s2', '-1s', 'soon', '1 s']) expect(parseGoDuration(bad)).toBeNull();
    expect(parseGoDuration(undefined)).toBeNull();
  });

  it('parses RFC 3339 resets relative to now', () => {
    const now = Date.parse('2026-03-01T12:00:00Z');
    expect(parseResetInstant('2026-03-01T12:00:05Z', now)).toBe(5000);
    expect(parseResetInstant('2026-03-01T12:00:00.250Z', now)).toBe(250);
    expect(parseResetInstant('2026-03-01T11:59:00Z', now)).toBe(0);
    expect(parseResetInstant('garbage', now)).toBeNull();
  });

  it('reads OpenAI x-ratelimit-* headers', () => {
    const info = parseRateLimitHeaders(
      lookup({
        'x-ratelimit-limit-requests': '500',
        'x-ratelimit-remaining-requests': '499',
        'x-ratelimit-reset-requests': '120ms',
        'x-ratelimit-limit-tokens': '200000',
        'x-ratelimit-remaining-tokens': '199420',
        'x-ratelimit-reset-tokens': '2s81ms',
      }),
    );
    expect(info?.requests).toEqual({ limit: 500, remaining: 499, resetMs: 120 });
    expect(info?.tokens).toEqual({ limit: 200_000, remaining: 199_420, resetMs: 2081 });
    expect(info?.retryAfterMs).toBeNull();
    expect(tokenWindow(info!)).toBe(info?.tokens);
  });

  it('reads Anthropic anthropic-ratelimit-* headers with RFC 3339 resets', () => {
    const now = Date.parse('2026-03-01T12:00:00Z');
    const info = parseRateLimitHeaders(
      lookup({
        'anthropic-ratelimit-requests-limit': '50',
        'anthropic-ratelimit-requests-remaining': '49',
        'anthropic-ratelimit-requests-reset': '2026-03-01T12:00:01Z',
        'anthropic-ratelimit-input-tokens-limit': '40000',
        'anthropic-ratelimit-input-tokens-remaining': '39000',
        'anthropic-ratelimit-input-tokens-reset': '2026-03-01T12:00:02Z',
        'anthropic-ratelimit-output-tokens-limit': '8000',
        'anthropic-ratelimit-output-tokens-remaining': '8000',
        'anthropic-ratelimit-output-tokens-reset': '2026-03-01T12:00:00Z',
        'retry-after': '3',
      }),
      now,
    );
    expect(info?.requests).toEqual({ limit: 50, remaining: 49, resetMs: 1000 });
    expect(info?.tokens).toBeNull();
    expect(info?.inputTokens).toEqual({ limit: 40_000, remaining: 39_000, resetMs: 2000 });
    expect(info?.outputTokens).toEqual({ limit: 8000, remaining: 8000, resetMs: 0 });
    expect(info?.retryAfterMs).toBe(3000);
    // The budget paces by the input tokens when Anthropic sends no combined tokens limit.
    expect(tokenWindow(info!)).toBe(info?.inputTokens);
    const combined = parseRateLimitHeaders(
      lookup({ 'anthropic-ratelimit-tokens-limit': '48000', 'anthropic-ratelimit-tokens-remaining': '1' }),
      now,
    );
    expect(combined?.tokens).toEqual({ limit: 48_000, remaining: 1, resetMs: null });
  });

  it('reads retry-after-ms first, then retry-after as seconds or an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(
      parseRateLimitHeaders(lookup({ 'retry-after-ms': '1500', 'retry-after': '9' }))?.retryAfterMs,
    ).toBe(1500);
    expect(parseRateLimitHeaders(lookup({ 'retry-after': '2' }))?.retryAfterMs).toBe(2000);
    expect(
      parseRateLimitHeaders(lookup({ 'retry-after': 'Thu, 01 Jan 2026 00:00:05 GMT' }), now)?.retryAfterMs,
    ).toBe(5000);
  });

  it('returns null for an answer with none of these headers, and ignores values that do not parse', () => {
    expect(parseRateLimitHeaders(lookup({ 'content-type': 'application/json' }))).toBeNull();
    expect(
      parseRateLimitHeaders(lookup({ 'x-ratelimit-limit-tokens': 'lots', 'retry-after': 'soon' })),
    ).toBeNull();
    const partial = parseRateLimitHeaders(
      lookup({ 'x-ratelimit-remaining-tokens': '10', 'x-ratelimit-reset-tokens': '1y' }),
    );
    expect(partial?.tokens).toEqual({ limit: null, remaining: 10, resetMs: null });
  });

  it('recognises the header names it reads', () => {
    for (const n of [
      'x-ratelimit-limit-tokens',
      'anthropic-ratelimit-requests-reset',
      'retry-after',
      'retry-after-ms',
    ])
      expect(isRateLimitHeader(n)).toBe(true);
    for (const n of ['x-request-id', 'content-type', 'retry']) expect(isRateLimitHeader(n)).toBe(false);
  });
});

describe('token cost', () => {
  const opts = { defaultMaxOutputTokens: 256 };

  it('counts the prompt of chat, responses, completions, embeddings and Anthropic bodies', () => {
    expect(
      promptText({
        messages: [
          { role: 'system', content: 'be brief' },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'hello' },
              { type: 'image_url', image_url: {} },
            ],
          },
        ],
      }),
    ).toEqual({ text: 'be brief\nhello', messages: 2 });
    expect(promptText({ input: 'abc', instructions: 'sys' })).toEqual({ text: 'sys\nabc', messages: 0 });
    expect(promptText({ input: [{ role: 'user', content: [{ type: 'input_text', text: 'q' }] }] })).toEqual({
      text: 'q',
      messages: 1,
    });
    expect(promptText({ prompt: ['a', 'b'] }).text).toBe('a\nb');
    expect(promptText({ input: ['x', 'y'] }).text).toBe('x\ny');
    expect(promptText({ system: 'S', messages: [{ role: 'user', content: 'U' }] }).text).toBe('U\nS');
    expect(promptText(null)).toEqual({ text: '', messages: 0 });
  });

  it('adds the requested maximum output (times n), or the default, and none for embeddings', () => {
    expect(maxOutputTokens({ max_tokens: 100 }, '/v1/chat/completions', opts)).toBe(100);
    expect(
      maxOutputTokens({ max_completion_tokens: 50, max_tokens: 100 }, '/v1/chat/completions', opts),
    ).toBe(50);
    expect(maxOutputTokens({ max_output_tokens: 70 }, '/v1/responses', opts)).toBe(70);
    expect(maxOutputTokens({ max_tokens: 10, n: 3 }, '/v1/chat/completions', opts)).toBe(30);
    expect(maxOutputTokens({}, '/v1/chat/completions', opts)).toBe(256);
    expect(maxOutputTokens({ max_tokens: 10 }, '/v1/embeddings', opts)).toBe(0);
  });

  it('estimates characters / 4 plus message overhead plus output without a tokenizer', () => {
    const body = JSON.stringify({
      model: 'm',
      messages: [{ role: 'user', content: 'x'.repeat(400) }],
      max_tokens: 20,
    });
    expect(estimateTokenCost(body, '/v1/chat/completions', opts)).toBe(100 + 4 + 20);
    expect(charEstimate('abcde')).toBe(2);
    expect(estimateTokenCost('not json at all', '/v1/chat/completions', opts)).toBe(4 + 256);
  });

  it('uses a real tokenizer for models it knows', async () => {
    expect(encodingForModel('gpt-4o-mini')).toBe('o200k_base');
    expect(encodingForModel('gpt-4.1-nano')).toBe('o200k_base');
    expect(encodingForModel('gpt-4-turbo')).toBe('cl100k_base');
    expect(encodingForModel('text-embedding-3-small')).toBe('cl100k_base');
    expect(encodingForModel('claude-sonnet-4')).toBeNull();
    expect(encodingForModel('llama-3-70b')).toBeNull();
    const counter = await loadTokenCounter('gpt-4o-mini');
    expect(counter).not.toBeNull();
    expect(counter!('hello world')).toBe(2);
    const body = JSON.stringify({ messages: [{ role: 'user', content: 'hello world' }], max_tokens: 10 });
    expect(estimateTokenCost(body, '/v1/chat/completions', opts, counter)).toBe(2 + 4 + 10);
    expect(await loadTokenCounter('claude-sonnet-4')).toBeNull();
  });
});

describe('token bucket', () => {
  const limit = { perMinute: 6000, capacity: 6000 }; // 100 a second

  it('refills continuously and never above capacity', () => {
    const b: Bucket = { level: 0, at: 0 };
    expect(refill(b, limit, 10).level).toBeCloseTo(1);
    expect(refill(b, limit, 1000).level).toBeCloseTo(100);
    expect(refill(b, limit, 10 * 60_000).level).toBe(6000);
    expect(fullBucket(limit, 5)).toEqual({ level: 6000, at: 5 });
  });

  it('refuses a burst the bucket does not hold and says how long to wait', () => {
    let b: Bucket = { level: 50, at: 0 };
    const r = take(b, 80, limit, 0);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.waitMs).toBe(300);
    const later = take(b, 80, limit, 300);
    expect(later.ok).toBe(true);
    b = later.bucket;
    expect(b.level).toBeCloseTo(0);
    expect(waitMs(b, 7000, limit, 300)).toBe(Number.POSITIVE_INFINITY);
    expect(resetMs({ level: 3000, at: 0 }, limit, 0)).toBe(30_000);
  });

  it('admits no more than capacity + rate × time over any window (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ dt: fc.integer({ min: 0, max: 2000 }), cost: fc.integer({ min: 1, max: 500 }) }),
          {
            maxLength: 200,
          },
        ),
        (steps) => {
          let b = fullBucket(limit, 0);
          let now = 0;
          let admitted = 0;
          for (const s of steps) {
            now += s.dt;
            const r = take(b, s.cost, limit, now);
            b = r.bucket;
            if (r.ok) admitted += s.cost;
            expect(b.level).toBeGreaterThanOrEqual(-1e-9);
          }
          expect(admitted).toBeLessThanOrEqual(limit.capacity + (now * limit.perMinute) / 60_000 + 1e-6);
        },
      ),
    );
  });
});

describe('adaptive concurrency (AIMD)', () => {
  const opts = { max: 20, min: 1, decreaseFactor: 0.9 };

  it('decreases ×0.9 on overload, once per cooldown', () => {
    let s = aimdStart(opts);
    expect(aimdAllowed(s)).toBe(20);
    s = aimdUpdate(s, 'overload', 20, 100, 1000, opts);
    expect(aimdAllowed(s)).toBe(18);
    s = aimdUpdate(s, 'overload', 18, 100, 1050, opts); // the same congestion event
    expect(aimdAllowed(s)).toBe(18);
    s = aimdUpdate(s, 'overload', 18, 100, 1200, opts);
    expect(aimdAllowed(s)).toBe(16);
  });

  it('increases by one per window of successes while at least half is in use, never above max', () => {
    let s = aimdStart(opts, 10);
    for (let i = 0; i < 10; i++) s = aimdUpdate(s, 'ok', 2, 10, i, opts); // mostly idle: no growth
    expect(aimdAllowed(s)).toBe(10);
    for (let i = 0; i < 10; i++) s = aimdUpdate(s, 'ok', 8, 10, i, opts);
    expect(aimdAllowed(s)).toBe(10);
    s = aimdUpdate(s, 'ok', 8, 10, 11, opts);
    expect(aimdAllowed(s)).toBe(11);
    for (let i = 0; i < 10_000; i++) s = aimdUpdate(s, 'ok', 20, 10, i, opts);
    expect(s.limit).toBe(20);
  });

  it('never leaves [min, max] (property) and classifies outcomes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('ok', 'overload', 'neutral') as fc.Arbitrary<'ok' | 'overload' | 'neutral'>),
        (signals) => {
          let s = aimdStart(opts);
          let t = 0;
          for (const sig of signals) {
            t += 50;
            s = aimdUpdate(s, sig, 15, 10, t, opts);
            expect(s.limit).toBeGreaterThanOrEqual(1);
            expect(s.limit).toBeLessThanOrEqual(20);
          }
        },
      ),
    );
    expect(aimdSignal({ status: 429, timeout: false })).toBe('overload');
    expect(aimdSignal({ status: 503, timeout: false })).toBe('overload');
    expect(aimdSignal({ status: null, timeout: true })).toBe('overload');
    expect(aimdSignal({ status: 200, timeout: false })).toBe('ok');
    expect(aimdSignal({ status: 400, timeout: false })).toBe('neutral');
  });
});

describe('rate wallet (one daemon, one model)', () => {
  const limits = { rpm: 600, tpm: 60_000 };

  it('admits nothing until a grant, then as many rows as the tokens cover at the average cost', () => {
    const w = newWallet(limits, 300);
    expect(admissible(w, 0)).toBe(0);
    applyGrant(w, { requests: 10, tokens: 1000, limits, pausedUntil: 0 }, 0);
    expect(admissible(w, 0)).toBe(3);
    reserve(w, 3);
    expect(admissible(w, 0)).toBe(1); // 100 tokens left: positive, so one more (a debt of one estimate at most)
    settle(w, 3, 300, [250, 250]);
    expect(w.tokens).toBeCloseTo(1000 - 500);
    expect(w.requests).toBe(8);
    expect(w.avgCost).toBeLessThan(300);
  });

  it('an unlimited wallet never limits; requests alone limit by count', () => {
    expect(admissible(newWallet({ rpm: null, tpm: null }, 1), 0)).toBe(Number.POSITIVE_INFINITY);
    const w = newWallet({ rpm: 60, tpm: null }, 1);
    applyGrant(w, { requests: 2.5, tokens: 0, limits: { rpm: 60, tpm: null }, pausedUntil: 0 }, 0);
    expect(admissible(w, 0)).toBe(2);
    expect(demand(w, 5)).toEqual({ requests: 2.5, tokens: 5 });
  });

  it('gives everything back at a rebalance, and a 429 pauses and empties it', () => {
    const w = newWallet(limits, 100);
    applyGrant(w, { requests: 5, tokens: 500, limits, pausedUntil: 0 }, 0);
    expect(giveBack(w)).toEqual({ requests: 5, tokens: 500 });
    expect(admissible(w, 0)).toBe(0);
    applyGrant(w, { requests: 5, tokens: 500, limits, pausedUntil: 0 }, 0);
    throttled(w, 2000, 1000);
    expect(admissible(w, 2999)).toBe(0);
    expect(w.tokens).toBe(0);
    // The database's pause (another daemon's 429) holds too, and the later of the two wins.
    applyGrant(w, { requests: 5, tokens: 500, limits, pausedUntil: 2500 }, 1500);
    expect(admissible(w, 2999)).toBe(0);
    expect(admissible(w, 3000)).toBe(5);
    expect(limited(w)).toBe(true);
  });
});
