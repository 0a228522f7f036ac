/**
 * The mock upstream in a process of its own (as a real upstream is: it must not share an event loop
 * with what it measures). Env: LATENCY_MS, RATE_LIMITS (JSON MockRateLimits: enforce RPM/TPM), PREFIX_CACHE (JSON
 * PrefixCacheOptions: a prompt cache, its counts in the stats). Over
 * IPC it sends {type:'ready', url} once listening and answers {type:'stats'} with {received,
 * maxInFlight, inFlight, rateLimits (the limiter's counts per model, or null)}; {type:'reset'}
 * forgets the maxima and the rate counts (and refills the buckets), {type:'latency', ms} changes the
 * delay. ANSWER=usage|no-usage: every request gets the same chat completion, with its usage block,
 * or without it and padded to the same length (bench/usage-accounting.ts compares the two).
 */
import type { PrefixCacheOptions } from '../../src/mock-upstream/prefix-cache.js';
import type { MockRateLimits } from '../../src/mock-upstream/rate-limits.js';
import { okObject } from '../../src/mock-upstream/responses.js';
import { startMockUpstream } from '../../src/mock-upstream/server.js';

const mock = await startMockUpstream({
  latencyMs: Number(process.env.LATENCY_MS ?? 0),
  record: false,
  recordBodies: false,
  rateLimits: process.env.RATE_LIMITS ? (JSON.parse(process.env.RATE_LIMITS) as MockRateLimits) : undefined,
  prefixCache: process.env.PREFIX_CACHE
    ? (JSON.parse(process.env.PREFIX_CACHE) as PrefixCacheOptions)
    : undefined,
});

if (process.env.ANSWER === 'usage' || process.env.ANSWER === 'no-usage') {
  const answer = okObject('/v1/chat/completions', 'bench', {});
  let body = JSON.stringify(answer);
  if (process.env.ANSWER === 'no-usage') {
    const { usage: _usage, ...rest } = answer;
    const bare = JSON.stringify({ ...rest, pad: '' });
    body = JSON.stringify({ ...rest, pad: 'x'.repeat(body.length - bare.length) });
  }
  mock.setBehaviour(() => ({ kind: 'status', status: 200, body }));
}

process.on('message', (msg: { type: string; ms?: number }) => {
  if (msg.type === 'stats') {
    process.send!({
      type: 'stats',
      received: mock.received,
      inFlight: mock.inFlight.total,
      maxInFlight: mock.maxInFlight.total,
      rateLimits: mock.rateLimiter?.stats() ?? null,
      prefixCache: mock.prefixCache?.stats() ?? null,
    });
  } else if (msg.type === 'reset') {
    mock.reset();
    process.send!({ type: 'reset' });
  } else if (msg.type === 'latency') {
    mock.setLatency(msg.ms ?? 0);
    process.send!({ type: 'latency' });
  }
});
process.on('disconnect', () => {
  void mock.close().then(() => process.exit(0));
});
process.send!({ type: 'ready', url: mock.url });
