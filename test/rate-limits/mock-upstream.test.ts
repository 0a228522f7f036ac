import { afterEach, describe, expect, it } from 'vitest';
import { rateLimitedWrite, settleAttempt } from '../../src/daemon/settle.js';
import { UndiciAttempt, UndiciUpstreamClient } from '../../src/daemon/upstream-client.js';
import {
  parseGoDuration,
  parseRateLimitHeaders,
  type RateLimitInfo,
} from '../../src/domain/rate-limit-headers.js';
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

describe('the daemon reads the headers of every answer', () => {
  it('the upstream client parses them in one pass, and reports none for an upstream that sends none', async () => {
    const limited = await startMockUpstream({ rateLimits: { rpm: 1, tpm: 1000 } });
    const plain = await startMockUpstream();
    const client = new UndiciUpstreamClient(10_000);
    try {
      const send = (origin: string) =>
        client.start(
          { origin, path: '/v1/chat/completions', method: 'POST', headers: {}, body: chat('hello', 10) },
          new UndiciAttempt(),
        );
      const ok = await send(limited.url);
      expect(ok.kind === 'http' && ok.rateLimit?.tokens?.limit).toBe(1000);
      expect(ok.kind === 'http' && ok.upstreamRequestId).toMatch(/^req_mock_/);
      const refused = await send(limited.url);
      expect(refused.kind === 'http' && refused.status).toBe(429);
      expect(refused.kind === 'http' && refused.retryAfterMs).toBeGreaterThan(1000);
      expect(refused.kind === 'http' && refused.rateLimit?.requests?.remaining).toBe(0);
      const none = await send(plain.url);
      expect(none.kind === 'http' && none.rateLimit).toBeNull();
      expect(none.kind === 'http' && none.retryAfterMs).toBeNull();
      const viaRequest = await client.send(
        { origin: limited.url, path: '/v1/chat/completions', method: 'POST', headers: {}, body: chat('x') },
        new AbortController().signal,
      );
      expect(viaRequest.kind === 'http' && viaRequest.rateLimit?.requests?.limit).toBe(1);
    } finally {
      await client.close();
      await limited.close();
      await plain.close();
    }
  });

  it('a 429 with a hint costs no attempt on a paced model or with limit headers; otherwise as before', () => {
    const row = { id: 'r', batchId: 'b', model: 'm', attempt: 2, deadline: 1_000_000 };
    const policy = { maxRetries: 3, backoffMs: 10, backoffFactor: 2, maxBackoffMs: 100 };
    const http429 = (rateLimit: RateLimitInfo | null, retryAfterMs: number | null = 500) =>
      ({ kind: 'http', status: 429, body: '{}', upstreamRequestId: null, retryAfterMs, rateLimit }) as const;
    const sent: Record<string, string> = { 'x-ratelimit-remaining-tokens': '0' };
    const headers = parseRateLimitHeaders((n) => sent[n]);
    const paced = settleAttempt({ ...row, paced: true }, http429(null), null, policy, 1000);
    expect(paced).toMatchObject({ state: 'pending', giveBack: true, reason: 'rate_limited' });
    expect(paced.notBefore?.getTime()).toBe(1500);
    expect(settleAttempt(row, http429(headers), null, policy, 1000)).toMatchObject({ giveBack: true });
    // No limit headers and not paced: an ordinary retry that counts.
    expect(settleAttempt(row, http429(null), null, policy, 1000)).toMatchObject({
      state: 'pending',
      giveBack: false,
    });
    // No hint: an ordinary retry too; past the deadline: not a free wait.
    expect(settleAttempt({ ...row, paced: true }, http429(headers, null), null, policy, 1000).giveBack).toBe(
      false,
    );
    expect(rateLimitedWrite({ ...row, paced: true, deadline: 1200 }, http429(null), 1000)).toBeNull();
  });
});
