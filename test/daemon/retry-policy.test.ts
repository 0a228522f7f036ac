import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  classifyOutcome,
  decideRetry,
  isInsufficientQuota,
  parseRetryAfter,
} from '../../src/domain/retry.js';

const http = (status: number, body = '{}') =>
  ({ kind: 'http', status, body, upstreamRequestId: null, retryAfterMs: null }) as const;
const policy = { maxRetries: 3, backoffMs: 1000, backoffFactor: 2, maxBackoffMs: 60_000 };

describe('retry policy', () => {
  it('classifies statuses and errors', () => {
    for (const s of [408, 429, 500, 502, 503, 504, 529]) expect(classifyOutcome(http(s))).toBe('retriable');
    for (const s of [400, 401, 403, 404, 422]) expect(classifyOutcome(http(s))).toBe('final');
    expect(classifyOutcome(http(200, '{"ok":1}'))).toBe('success');
    expect(classifyOutcome(http(200, '<html>'))).toBe('retriable');
    const quota = JSON.stringify({ error: { code: 'insufficient_quota', message: 'x' } });
    expect(isInsufficientQuota(quota)).toBe(true);
    expect(classifyOutcome(http(429, quota))).toBe('final');
    expect(classifyOutcome({ kind: 'error', code: 'connection_error', message: 'x' })).toBe('retriable');
  });

  it('parses retry-after-ms first, then seconds or an HTTP date', () => {
    expect(parseRetryAfter('250', '9')).toBe(250);
    expect(parseRetryAfter(null, '2')).toBe(2000);
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter(null, 'Thu, 01 Jan 2026 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter(null, 'soon')).toBeNull();
    expect(parseRetryAfter(undefined, undefined)).toBeNull();
  });

  it('full jitter stays within the cap, never below the hint, never past the deadline', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.option(fc.integer({ min: 0, max: 100_000 }), { nil: null }),
        fc.double({ min: 0, max: 0.999999, noNaN: true }),
        (attempt, hint, r) => {
          const now = 1_000_000;
          const deadline = now + 50_000;
          const d = decideRetry(attempt, hint, deadline, policy, now, () => r);
          const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (attempt - 1));
          if (!d.retry) {
            expect(d.reason).toBe('deadline');
            expect(Math.max(r * ceiling, hint ?? 0)).toBeGreaterThanOrEqual(deadline - now - 1);
            return;
          }
          expect(d.notBefore).toBeLessThan(deadline);
          expect(d.notBefore - now).toBeGreaterThanOrEqual(hint ?? 0);
          expect(d.notBefore - now).toBeLessThanOrEqual(Math.max(ceiling, hint ?? 0) + 1);
        },
      ),
    );
    expect(decideRetry(4, null, Number.MAX_SAFE_INTEGER, policy)).toEqual({
      retry: false,
      reason: 'retries_exhausted',
    });
  });
});
