import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 20 });
  mock = await startMockUpstream({ latencyMs: 40 });
  // (the first test raises the latency so claim cycles are small next to it, as with real LLMs)
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

describe('global per-model limits', () => {
  it('two daemons share one limit: never above it, and at it while there is a backlog', async () => {
    const config = { modelConcurrencyLimits: { 'model-a': 8 }, pollIntervalMs: 100, logger: () => {} };
    // The upstream answers model-a's requests in waves of exactly 8: a wave is answered only once 8
    // are in flight at once. So the batch can only finish if the daemons keep the whole limit busy,
    // every time, whatever the speed of this machine (no sampling of a clock).
    let wave: (() => void)[] = [];
    mock.setBehaviour(async (req) => {
      if (req.model !== 'model-a') return { kind: 'ok' };
      await new Promise<void>((resolve) => {
        wave.push(resolve);
        if (wave.length === 8) {
          for (const answer of wave) answer();
          wave = [];
        }
      });
      return { kind: 'ok' };
    });
    const d1 = await db.manager(config).run();
    const d2 = await db.manager(config).run();
    try {
      const m = db.manager();
      mock.reset();
      const batchId = await createBatch(m, [
        ...mockTemplates(mock, 80, { model: 'model-a', prefix: 'a-' }),
        ...mockTemplates(mock, 30, { model: 'model-b', prefix: 'b-' }),
      ]);
      const status = await waitForBatchEnd(m, batchId, 120_000);
      expect(status.completedRequests).toBe(110);
      expect(mock.maxInFlight.byModel.get('model-a')).toBe(8);
      // Unlisted models get the default limit (16), inserted on first sight.
      expect(mock.maxInFlight.byModel.get('model-b')).toBeLessThanOrEqual(16);
      const limits = await db.pool.query(
        `SELECT model, concurrency FROM ${m.schema}.model_limits ORDER BY model`,
      );
      expect(limits.rows).toEqual([
        { model: 'model-a', concurrency: 8 },
        { model: 'model-b', concurrency: 16 },
      ]);
      // Both daemons claimed under the shared limit (which one wins a free slot is not fixed).
      const daemons = await db.pool.query(
        `SELECT count(*)::int AS n FROM ${m.schema}.daemons WHERE id = ANY($1) AND stopped_at IS NULL`,
        [[d1.id, d2.id]],
      );
      expect(daemons.rows[0].n).toBe(2);
    } finally {
      mock.setBehaviour(null);
      await Promise.all([d1.stop(), d2.stop()]);
    }
  }, 180_000);

  it('setModelConcurrency changes the limit for running daemons', async () => {
    const m = db.manager({ pollIntervalMs: 100, logger: () => {} });
    await m.setModelConcurrency('model-c', 2);
    const d = await m.run();
    try {
      mock.reset();
      const batchId = await createBatch(m, mockTemplates(mock, 200, { model: 'model-c', prefix: 'c-' }));
      await waitFor(async () => (await m.getBatchStatus(batchId)).completedRequests >= 20);
      expect(mock.maxInFlight.byModel.get('model-c')).toBeLessThanOrEqual(2);
      await m.setModelConcurrency('model-c', 10);
      await waitFor(() => (mock.inFlight.byModel.get('model-c') ?? 0) >= 8, 60_000, 2);
      const status = await waitForBatchEnd(m, batchId, 30_000);
      expect(status.completedRequests).toBe(200);
      expect(mock.maxInFlight.byModel.get('model-c')).toBeLessThanOrEqual(10);
      await expect(m.setModelConcurrency('model-c', -1)).rejects.toThrow(/concurrency/);
    } finally {
      await d.stop();
    }
  });
});
