import { afterEach, describe, expect, it } from 'vitest';
import { parseGoDuration, parseRateLimitHeaders } from '../../src/domain/rate-limit-headers.js';
import { goDuration } from '../../src/mock-upstream/rate-limits.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { startCli, waitFor } from '../cli/support/cli.js';

const chat = (content: string, maxTokens?: number) =>
  JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content }], max_tokens: maxTokens });

async function post(url: string, body: string) {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const headers = Object.fromEntries(res.headers.entries());
  return { status: res.status, headers, body: await res.text() };
}

describe('the rate-limiting mock upstream', () => {
  let mock: MockUpstream | null = null;
  afterEach(async () => {
    await mock?.close();
    mock = null;
  });

  it('formats Go durations the parser reads back', () => {
    for (const ms of [0, 120, 1000, 2081, 59_999, 360_000, 3_723_500]) {
      expect(parseGoDuration(goDuration(ms))).toBeCloseTo(ms, 0);
    }
    expect(goDuration(360_000)).toBe('6m0s');
    expect(goDuration(2081)).toBe('2.081s');
  });

  it('counts tokens at admission (prompt characters / 4 + max output), sends the headers, 429s when over', async () => {
    // 1,000 tokens a minute, a bucket of 6 s (100 tokens); each request costs 100/4 + 4 + 46 = 75.
    mock = await startMockUpstream({ rateLimits: { tpm: 1000, rpm: 600, burstSeconds: 6 } });
    const body = chat('x'.repeat(100), 46);
    expect(mock.rateLimiter!.cost(body, '/v1/chat/completions')).toBe(75);
    const first = await post(mock.url, body);
    expect(first.status).toBe(200);
    const info = parseRateLimitHeaders((n) => first.headers[n]);
    expect(info?.tokens?.limit).toBe(1000);
    expect(info?.tokens?.remaining).toBe(25);
    expect(info?.requests).toMatchObject({ limit: 600, remaining: 59 });
    expect(info?.tokens?.resetMs).toBeGreaterThan(4000);
    const second = await post(mock.url, body);
    expect(second.status).toBe(429);
    const hint = Number(second.headers['retry-after-ms']);
    // 50 tokens missing at 1,000 a minute: 3 s, less the time since the first request.
    expect(hint).toBeGreaterThan(0);
    expect(hint).toBeLessThanOrEqual(3000);
    expect(Number(second.headers['retry-after'])).toBe(Math.ceil(hint / 1000));
    expect(JSON.parse(second.body).error.code).toBe('rate_limit_exceeded');
    expect(second.headers['x-ratelimit-remaining-tokens']).toBeDefined();
    const stats = mock.rateLimiter!.stats().models['gpt-test']!;
    expect(stats).toMatchObject({ admitted: 1, admittedTokens: 75, throttled: 1 });
    const served = (await (await fetch(`${mock.url}/__mock/stats`)).json()) as {
      rateLimits: { models: Record<string, { throttled: number }> };
    };
    expect(served.rateLimits.models['gpt-test']?.throttled).toBe(1);
  });

  it('limits requests per minute on their own, and can send Anthropic-style or no limit headers', async () => {
    mock = await startMockUpstream({ rateLimits: { rpm: 2, headers: 'anthropic' } });
    const a = await post(mock.url, chat('hi'));
    expect(a.headers['anthropic-ratelimit-requests-remaining']).toBe('1');
    expect(Date.parse(a.headers['anthropic-ratelimit-requests-reset']!)).toBeGreaterThan(Date.now());
    expect((await post(mock.url, chat('hi'))).status).toBe(200);
    const c = await post(mock.url, chat('hi'));
    expect(c.status).toBe(429);
    expect(parseRateLimitHeaders((n) => c.headers[n])?.requests?.remaining).toBe(0);
    await mock.close();
    mock = await startMockUpstream({ rateLimits: { rpm: 1, headers: 'none' } });
    const d = await post(mock.url, chat('hi'));
    expect(parseRateLimitHeaders((n) => d.headers[n])).toBeNull();
    const e = await post(mock.url, chat('hi'));
    expect(e.status).toBe(429);
    expect(Number(e.headers['retry-after-ms'])).toBeGreaterThan(50_000);
  });

  it('runs as its own process: fusillade mock-upstream --rpm --tpm', async () => {
    const cli = startCli([
      'mock-upstream',
      '--port',
      '0',
      '--tpm',
      '1000',
      '--rpm',
      '60',
      '--burst-seconds',
      '6',
    ]);
    try {
      await waitFor(() => cli.output().stdout.includes('tokens/min'), 30_000);
      const url = /listening on (http\S+)/.exec(cli.output().stdout)![1]!;
      expect(cli.output().stdout).toContain('60 requests/min, 1000 tokens/min');
      const r = await post(url, chat('x'.repeat(100), 46));
      expect(r.headers['x-ratelimit-limit-tokens']).toBe('1000');
      expect((await post(url, chat('x'.repeat(100), 46))).status).toBe(429);
    } finally {
      cli.kill('SIGTERM');
      await cli.exited;
    }
  });
});
