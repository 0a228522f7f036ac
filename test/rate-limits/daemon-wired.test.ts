import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RequestTemplateInput } from '../../src/domain/templates.js';
import type { DaemonHandle } from '../../src/manager/request-manager.js';
import type { MockRateLimits } from '../../src/mock-upstream/rate-limits.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, waitForBatchEnd } from '../support/mock-upstream.js';

/**
 * DaemonRateLimits wired into the daemon (issue 11): three daemons on one database against the
 * rate-limiting mock. No tokenizer knows these model names, so the daemons' estimate and the mock's
 * count are the same (characters / 4 + max_tokens + 4 per message): each request costs 100 tokens.
 */

let db: TestDb;
let mock: MockUpstream | null = null;
let daemons: DaemonHandle[] = [];
beforeAll(async () => {
  db = await createTestDb({ max: 40 });
});
afterEach(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  daemons = [];
  await mock?.close();
  mock = null;
});
afterAll(async () => {
  await db.close();
});

const quiet = { pollIntervalMs: 200, logger: () => {}, maxRetries: 50, backoffMs: 50, maxBackoffMs: 500 };

function templates(url: string, model: string, n: number): RequestTemplateInput[] {
  return Array.from({ length: n }, (_, i) => ({
    endpoint: url,
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'x'.repeat(100) }], max_tokens: 71 }),
    model,
    apiKey: 'sk-upstream-secret',
    customId: `r-${i}`,
  }));
}

async function startMock(rateLimits: MockRateLimits): Promise<MockUpstream> {
  mock = await startMockUpstream({ latencyMs: 20, recordBodies: false, rateLimits });
  return mock;
}

async function run(model: string, n: number, config: Record<string, unknown>) {
  daemons = await Promise.all([1, 2, 3].map(() => db.manager({ ...quiet, ...config }).run()));
  const m = db.manager();
  const batchId = await createBatch(m, templates(mock!.url, model, n));
  const status = await waitForBatchEnd(m, batchId, 240_000);
  const { rows } = await db.pool.query<{ attempt: number; n: number }>(
    `SELECT attempt, count(*)::int AS n FROM "${db.schema}".requests WHERE batch_id = $1 GROUP BY attempt`,
    [batchId],
  );
  const stats = mock!.rateLimiter!.stats().models[model]!;
  return { status, stats, attempts: new Map(rows.map((r) => [r.attempt, r.n])) };
}

async function rateRow(model: string) {
  const { rows } = await db.pool.query(`SELECT * FROM "${db.schema}".model_rate_limits WHERE model = $1`, [
    model,
  ]);
  return rows[0] ?? null;
}

describe('rate limits in the daemon', () => {
  it('three daemons with --model-tpm at the upstream’s limit stay under it: no 429', async () => {
    // 60,000 tokens a minute: 10 requests a second; the mock holds 6 s of burst, the daemons 1 s, so
    // a request that reaches the mock late (a loaded machine) still finds its tokens there.
    await startMock({ tpm: 60_000, burstSeconds: 6 });
    const model = 'rl-configured';
    const { status, stats } = await run(model, 120, {
      modelRateLimits: { [model]: { tpm: 60_000 } },
      rateBurstSeconds: 1,
    });
    expect(status.completedRequests).toBe(120);
    expect(status.failedRequests).toBe(0);
    expect(stats.admitted).toBe(120);
    expect(stats.throttled).toBe(0);
    expect(await rateRow(model)).toMatchObject({ tpm: 60_000 });
  });

  it('with nothing configured, the headers pace the model; a 429 pauses it and costs no attempt', async () => {
    // A bucket of 2 s (20 requests) that the first claims overrun: 429s until the limit is learned.
    await startMock({ tpm: 60_000, burstSeconds: 2 });
    const model = 'rl-learned';
    const { status, stats, attempts } = await run(model, 120, { modelConcurrencyLimits: { [model]: 30 } });
    expect(status.completedRequests).toBe(120);
    expect(status.failedRequests).toBe(0);
    expect(stats.admitted).toBe(120);
    // Every request was admitted on its first counted attempt: the 429s went back without counting.
    expect(attempts.get(1)).toBe(120);
    expect(await rateRow(model)).toMatchObject({ tpm: null, learned_tpm: 60_000 });
  });

  it('an upstream that sends no limit headers: no rate state, a 429 is an ordinary counted retry', async () => {
    // A bucket of one request, refilled 10 a second: the first wave of 30 overruns it.
    await startMock({ tpm: 60_000, burstSeconds: 0.1, headers: 'none' });
    const model = 'rl-headerless';
    const { status, stats, attempts } = await run(model, 60, { modelConcurrencyLimits: { [model]: 30 } });
    expect(status.completedRequests).toBe(60);
    expect(stats.admitted).toBe(60);
    // Every 429 was counted as an attempt, as before.
    expect(stats.throttled).toBeGreaterThan(0);
    const counted = [...attempts].reduce((sum, [a, n]) => sum + (a - 1) * n, 0);
    expect(counted).toBe(stats.throttled);
    expect(await rateRow(model)).toBeNull();
  });
});
