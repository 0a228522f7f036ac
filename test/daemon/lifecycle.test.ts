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
  it('an idle daemon starts a new batch on its notification (LISTEN/NOTIFY, not polling)', async () => {
    // Its poll would take an hour: only the notification can wake it. (Wake-up latency is measured
    // by bench/daemon-wakeup.ts, not asserted here.)
    const m = db.manager({ ...quiet, pollIntervalMs: 3_600_000 });
    // The daemon also tells its caller of each batch it ends (how `fusillade run` stops waiting),
    // and of each request its writes end (what `fusillade run` shows between counts).
    const ended: string[] = [];
    const told: string[] = [];
    const daemon = await m.run({
      onBatchFinished: (id) => ended.push(id),
      onRequestEnded: (id, state) => told.push(`${id} ${state}`),
    });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        // Idle between batches: the previous one has ended.
        const batchId = await createBatch(m, mockTemplates(mock, 1, { prefix: `wake${i}-` }));
        ids.push(batchId);
        await waitForBatchEnd(m, batchId, 60_000);
        expect(mock.requests.some((r) => r.customId === `wake${i}-0`)).toBe(true);
      }
      await waitFor(() => ended.length === 3, 60_000);
      expect(ended).toEqual(ids);
      expect(told).toEqual(ids.map((id) => `${id} completed`));
    } finally {
      await daemon.stop();
    }
  });

  it('cancelling a batch aborts its in-flight requests on its notification; they settle as canceled', async () => {
    // No poll within the test: the cancel's notification alone must abort the in-flight requests.
    const m = db.manager({ ...quiet, pollIntervalMs: 3_600_000 });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 40, { prefix: 'hang-c' }));
      await waitFor(() => (mock.inFlight.byModel.get('gpt-mock') ?? 0) >= 16, 60_000, 5);
      await m.cancelBatch(batchId);
      await waitFor(() => (mock.inFlight.byModel.get('gpt-mock') ?? 0) === 0, 60_000, 5);
      const status = await waitForBatchEnd(m, batchId, 60_000);
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

  it('rows of a batch cancelled while a claim of them ran are handed back, not sent on the slots its aborts freed', async () => {
    // The claim's snapshot predates the cancel, so it returns rows of the batch after the daemon
    // aborted the batch's attempts. Sent, they stood on the freed slots while the upstream still
    // counted the aborted requests (9 at a limit of 8 in fair-share.test.ts). The claim is held
    // on a lock of this daemon's budget row (claim.ts reads it FOR KEY SHARE) across the cancel.
    const gated = await startMockUpstream({ recordBodies: false });
    const held: (() => void)[] = [];
    gated.setBehaviour(async (req) => {
      if (req.attemptNo === 1 && gated.received <= 2) await new Promise<void>((r) => held.push(r));
      return { kind: 'ok' };
    });
    const m = db.manager({
      ...quiet,
      pollIntervalMs: 3_600_000,
      dbTimeoutMs: 120_000,
      modelConcurrencyLimits: { race: 2 },
    });
    const daemon = await m.run();
    const locker = await db.pool.connect();
    try {
      const batchId = await createBatch(m, mockTemplates(gated, 20, { prefix: 'race-', model: 'race' }));
      await waitFor(() => held.length === 2, 60_000, 5);
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM ${db.schema}.model_budgets WHERE model = 'race' FOR UPDATE`);
      held.shift()!();
      const claimWaits = async () =>
        (
          await db.pool.query(
            `SELECT 1 FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE '%FOR KEY SHARE OF b%' AND query LIKE $1`,
            [`%${db.schema}%`],
          )
        ).rowCount! > 0;
      await waitFor(claimWaits, 60_000, 5);
      await m.cancelBatch(batchId);
      // The notification reached the daemon: it aborted the attempt still held.
      await waitFor(() => (gated.inFlight.byModel.get('race') ?? 0) === 0, 60_000, 5);
      await locker.query('ROLLBACK');
      const status = await waitForBatchEnd(m, batchId, 60_000);
      expect(gated.received).toBe(2);
      expect(status).toMatchObject({ status: 'cancelled', completedRequests: 1, canceledRequests: 19 });
    } finally {
      await locker.query('ROLLBACK').catch(() => {});
      locker.release();
      await daemon.stop();
      await gated.close();
    }
  });

  it('a cancel whose notification was missed is found by the poll', async () => {
    const m = db.manager({ ...quiet, pollIntervalMs: 200 });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 4, { prefix: 'hang-p' }));
      await waitFor(() => (mock.inFlight.byModel.get('gpt-mock') ?? 0) === 4, 60_000);
      // Cancel behind the daemon's back: no NOTIFY.
      await db.pool.query(`UPDATE ${db.schema}.batches SET cancelling_at = now() WHERE id = $1`, [batchId]);
      const status = await waitForBatchEnd(m, batchId, 60_000);
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
      const status = await waitForBatchEnd(m, batchId, 60_000);
      expect(status).toMatchObject({ status: 'expired', canceledRequests: 6, completedRequests: 0 });
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
    // The quick requests answer once stop() has begun (inside the grace period); the slow ones never
    // answer, so the grace period runs out on them. No race with the clock besides the grace itself.
    let releaseQuick!: () => void;
    const quickMayAnswer = new Promise<void>((resolve) => {
      releaseQuick = resolve;
    });
    mock.setBehaviour(async (req) => {
      if (req.customId?.startsWith('quick-')) {
        await quickMayAnswer;
        return { kind: 'ok' };
      }
      if (req.customId?.startsWith('slow-')) return { kind: 'hang' };
      return { kind: 'ok' };
    });
    const graceMs = 5000;
    const m = db.manager({ ...quiet, shutdownGraceMs: graceMs });
    const daemon = await m.run();
    const quick = await createBatch(m, mockTemplates(mock, 3, { prefix: 'quick-', model: 'q' }));
    const slow = await createBatch(m, mockTemplates(mock, 3, { prefix: 'slow-', model: 's' }));
    await waitFor(
      () => (mock.inFlight.byModel.get('q') ?? 0) + (mock.inFlight.byModel.get('s') ?? 0) === 6,
      60_000,
      2,
    );
    const t0 = Date.now();
    const stopped = daemon.stop();
    releaseQuick();
    await stopped;
    // It waited for the grace period, since the slow requests never answer.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(graceMs - 100);
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
      expect((await waitForBatchEnd(m, slow, 60_000)).completedRequests).toBe(3);
    } finally {
      await next.stop();
    }
  }, 120_000);
});
