import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProgressDisplay } from '../../src/cli/progress.js';
import { batchRatePauseSql, pauseModelSql, publishRateUsageSql } from '../../src/db/sql/queue/rate-budget.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { operations } from '../../src/store/reads/dashboard/operations.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

/**
 * Rate limits made visible (issue 11): the daemon's Prometheus gauges, the dashboard's operations
 * JSON per model (budget, used per minute, pause, adaptive concurrency) and `fusillade run`'s
 * progress line while a model is paused.
 */

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 20 });
  mock = await startMockUpstream({ latencyMs: 10, recordBodies: false, rateLimits: { tpm: 600_000 } });
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const MODEL = 'rl-visible';

function templates(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    endpoint: mock.url,
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: 'user', content: 'x'.repeat(100) }],
      max_tokens: 71,
    }),
    model: MODEL,
    apiKey: 'sk-upstream-secret',
    customId: `v-${i}`,
  }));
}

const opsOf = () =>
  operations(db.pool, `"${db.schema}"`, { defaultModelConcurrency: 10, deadDaemonAfterMs: 30_000 });

describe('rate limits, visible', () => {
  it('gauges and the operations page show the budget, the use per minute and the adaptive concurrency', async () => {
    const registry = new Registry();
    const m = db.manager();
    const daemon = await db
      .manager({
        logger: () => {},
        pollIntervalMs: 200,
        metricsRegistry: registry,
        modelRateLimits: { [MODEL]: { tpm: 600_000, adaptiveConcurrency: true } },
      })
      .run();
    try {
      const batchId = await createBatch(m, templates(40));
      await waitForBatchEnd(m, batchId);
      // Each request is 100 tokens by the daemon's estimate (no tokenizer knows the model).
      const model = await waitFor(async () => {
        const found = (await opsOf()).models.find((x) => x.model === MODEL);
        return found?.rate && found.rate.requestsPerMinute >= 40 ? found : null;
      });
      expect(model.rate).toMatchObject({
        tpm: 600_000,
        rpm: null,
        source: 'configured',
        requestsPerMinute: 40,
        tokensPerMinute: 4000,
        pausedUntil: null,
      });
      expect(model.rate!.adaptiveConcurrency).toBeGreaterThan(0);
      const text = await registry.metrics();
      expect(text).toContain(`fusillade_model_rate_limit_per_minute{model="${MODEL}",kind="tokens"} 600000`);
      expect(text).toMatch(
        new RegExp(
          `fusillade_model_rate_used_per_minute\\{daemon="${daemon.id}",model="${MODEL}",kind="requests"\\} 40`,
        ),
      );
    } finally {
      await daemon.stop();
    }
  });

  it('a pause shows on the operations page and in the progress line', async () => {
    const m = db.manager();
    const batchId = await createBatch(m, templates(1));
    const { rows } = await db.pool.query(pauseModelSql(`"${db.schema}"`), [MODEL, 60_000]);
    const until = rows[0].paused_until_ms as number;
    const model = (await opsOf()).models.find((x) => x.model === MODEL);
    expect(model?.rate?.pausedUntil?.getTime()).toBe(until);
    const wait = await db.pool.query(batchRatePauseSql(`"${db.schema}"`), [batchId]);
    expect(wait.rows[0].until_ms).toBe(until);

    const progress = new ProgressDisplay({
      isTTY: false,
      write: () => true,
    } as unknown as NodeJS.WriteStream);
    const counts = { total: 1, completed: 0, failed: 0, canceled: 0, rateLimitedUntil: until };
    const d = new Date(until);
    const hhmmss = [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map((n) => String(n).padStart(2, '0'))
      .join(':');
    expect(progress.render(counts, until - 1000, 0)).toContain(`waiting for rate limit until ${hhmmss}`);
    // Once the pause is over, the line says nothing of it.
    expect(progress.render(counts, until + 1, 0)).not.toContain('waiting for rate limit');
  });

  it('a daemon publishing its usage clears the rows of daemons silent for an hour', async () => {
    const s = `"${db.schema}"`;
    const [gone, live] = [randomUUID(), randomUUID()];
    await db.pool.query(publishRateUsageSql(s), [gone, ['old-model'], [5], [500], [null]]);
    await db.pool.query(`UPDATE ${s}.model_rate_usage SET updated_at = now() - interval '2 hours'`);
    await db.pool.query(publishRateUsageSql(s), [live, ['old-model'], [7], [700], [3]]);
    const { rows } = await db.pool.query(
      `SELECT daemon_id, requests_per_minute, adaptive_concurrency FROM ${s}.model_rate_usage WHERE model = 'old-model'`,
    );
    expect(rows).toEqual([{ daemon_id: live, requests_per_minute: 7, adaptive_concurrency: 3 }]);
  });
});
