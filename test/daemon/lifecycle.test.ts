import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour((req) => (req.customId?.startsWith('hang-') ? { kind: 'hang' } : { kind: 'ok' }));
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const quiet = { logger: () => {} };

async function rowsOf(batchId: string) {
  const { rows } = await db.pool.query(
    `SELECT state, attempt, error_code, daemon_id FROM ${db.schema}.requests WHERE batch_id = $1 ORDER BY line_number`,
    [batchId],
  );
  return rows;
}

describe('daemon lifecycle', () => {
  it('an idle daemon starts a new batch within 100 ms (LISTEN/NOTIFY, not polling)', async () => {
    const m = db.manager({ ...quiet, pollIntervalMs: 10_000 });
    const daemon = await m.run();
    try {
      const delays: number[] = [];
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 300)); // idle, asleep on its 10 s poll
        const fileId = await m.createFile('f', null, mockTemplates(mock, 1, { prefix: `wake${i}-` }));
        const t0 = Date.now();
        await m.createBatch(fileId);
        await waitFor(() => mock.requests.some((r) => r.customId === `wake${i}-0`), 5000, 1);
        delays.push(mock.requests.find((r) => r.customId === `wake${i}-0`)!.receivedAt - t0);
      }
      expect(Math.min(...delays)).toBeLessThan(100);
      expect(Math.max(...delays)).toBeLessThan(1000);
    } finally {
      await daemon.stop();
    }
  });

  it('cancelling a batch aborts its in-flight requests within 2 s; they settle as canceled', async () => {
    const m = db.manager({ ...quiet, pollIntervalMs: 200 });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 40, { prefix: 'hang-c' }));
      await waitFor(() => (mock.inFlight.byModel.get('gpt-mock') ?? 0) >= 16, 5000, 5);
      const t0 = Date.now();
      await m.cancelBatch(batchId);
      await waitFor(() => (mock.inFlight.byModel.get('gpt-mock') ?? 0) === 0, 2000, 5);
      expect(Date.now() - t0).toBeLessThan(2000);
      const status = await waitForBatchEnd(m, batchId, 5000);
      expect(status).toMatchObject({ status: 'cancelled', canceledRequests: 40, completedRequests: 0 });
      const rows = await rowsOf(batchId);
      const aborted = rows.filter((r) => r.state === 'canceled');
      expect(aborted).toHaveLength(16); // the in-flight ones were rewritten; pending rows read as canceled
      for (const r of aborted) expect(r.error_code).toBe('batch_cancelled');
      const records = await m.getBatchRequests(batchId);
      expect(records.every((r) => r.state === 'canceled')).toBe(true);
    } finally {
      await daemon.stop();
    }
  });

  it('a cancel whose notification was missed is found by the poll', async () => {
    const m = db.manager({ ...quiet, pollIntervalMs: 200 });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 4, { prefix: 'hang-p' }));
      await waitFor(async () => (await rowsOf(batchId)).every((r) => r.state === 'processing'), 5000);
      // Cancel behind the daemon's back: no NOTIFY.
      await db.pool.query(`UPDATE ${db.schema}.batches SET cancelling_at = now() WHERE id = $1`, [batchId]);
      const t0 = Date.now();
      const status = await waitForBatchEnd(m, batchId, 5000);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(status.status).toBe('cancelled');
      expect((await rowsOf(batchId)).map((r) => r.error_code)).toEqual(Array(4).fill('batch_cancelled'));
    } finally {
      await daemon.stop();
    }
  });

  it('at the deadline, unsent requests read as expired, in-flight ones are aborted, the batch ends expired', async () => {
    const m = db.manager({
      ...quiet,
      pollIntervalMs: 200,
      shutdownGraceMs: 100,
      modelConcurrencyLimits: { 'gpt-exp': 2 },
    });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 6, { prefix: 'hang-e', model: 'gpt-exp' }));
      await db.pool.query(
        `UPDATE ${db.schema}.batches SET expires_at = now() + interval '1 second' WHERE id = $1`,
        [batchId],
      );
      const status = await waitForBatchEnd(m, batchId, 6000);
      expect(status).toMatchObject({ status: 'expired', canceledRequests: 6, completedRequests: 0 });
      const ended = await db.pool.query(
        `SELECT extract(epoch FROM finished_at - expires_at) * 1000 AS late_ms FROM ${db.schema}.batches WHERE id = $1`,
        [batchId],
      );
      // Ended by the daemon shortly after its deadline (poll 200 ms, sweep 500 ms).
      expect(Number(ended.rows[0].late_ms)).toBeLessThan(1500);
      const rows = await rowsOf(batchId);
      expect(rows.filter((r) => r.state === 'canceled').map((r) => r.error_code)).toEqual([
        'batch_expired',
        'batch_expired',
      ]);
      expect(rows.filter((r) => r.state === 'pending')).toHaveLength(4);
      const records = await m.getBatchRequests(batchId);
      expect(records.every((r) => r.state === 'canceled')).toBe(true);
    } finally {
      await daemon.stop();
    }
  });

  it('stop() lets in-flight requests finish within the grace period and hands the rest back', async () => {
    mock.setBehaviour((req) => {
      if (req.customId?.startsWith('quick-')) return { kind: 'delay', ms: 150 };
      if (req.customId?.startsWith('slow-')) return { kind: 'delay', ms: 20_000 };
      return { kind: 'ok' };
    });
    const m = db.manager({ ...quiet, shutdownGraceMs: 1500 });
    const daemon = await m.run();
    const quick = await createBatch(m, mockTemplates(mock, 3, { prefix: 'quick-', model: 'q' }));
    const slow = await createBatch(m, mockTemplates(mock, 3, { prefix: 'slow-', model: 's' }));
    await waitFor(
      () => (mock.inFlight.byModel.get('q') ?? 0) + (mock.inFlight.byModel.get('s') ?? 0) === 6,
      5000,
      2,
    );
    const t0 = Date.now();
    await daemon.stop();
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1400);
    expect(took).toBeLessThan(8000);
    expect((await rowsOf(quick)).map((r) => r.state)).toEqual(['completed', 'completed', 'completed']);
    const handedBack = await rowsOf(slow);
    for (const r of handedBack) expect(r).toMatchObject({ state: 'pending', attempt: 0, daemon_id: null });
    const d = await db.pool.query(`SELECT stopped_at FROM ${db.schema}.daemons WHERE id = $1`, [daemon.id]);
    expect(d.rows[0].stopped_at).not.toBeNull();
    await daemon.done;
    // Another daemon picks the handed-back rows up.
    mock.setBehaviour(null);
    const next = await m.run();
    try {
      expect((await waitForBatchEnd(m, slow)).completedRequests).toBe(3);
    } finally {
      await next.stop();
    }
  });
});
