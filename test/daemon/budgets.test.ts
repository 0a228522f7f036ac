import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reclaimSql, releaseDeadBudgetsSql } from '../../src/db/sql/queue/reclaim.js';
import type { Limiter } from '../../src/dispatch/interfaces.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import {
  createBatch,
  memoryLogger,
  mockTemplates,
  waitFor,
  waitForBatchEnd,
} from '../support/mock-upstream.js';

/**
 * The per-daemon slot budgets (src/db/sql/queue/budget.ts): daemons share each model's global limit
 * through model_budgets rows. The mock upstream counts what is really in flight per model.
 */

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 30 });
  mock = await startMockUpstream({ latencyMs: 150, recordBodies: false });
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const quiet = { pollIntervalMs: 200, logger: () => {} };

async function budgets(model: string): Promise<Map<string, number>> {
  const { rows } = await db.pool.query(
    `SELECT daemon_id, slots FROM "${db.schema}".model_budgets WHERE model = $1`,
    [model],
  );
  return new Map(rows.map((r) => [r.daemon_id as string, r.slots as number]));
}

async function processingBy(daemonId: string, model: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM "${db.schema}".requests WHERE daemon_id = $1 AND model = $2 AND state = 'processing'`,
    [daemonId, model],
  );
  return rows[0].n;
}

/** Samples the sum of budgets of a model while `until` is pending; returns the largest sum seen. */
async function maxBudgetSum(model: string, until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => {
    done = true;
  });
  let max = 0;
  while (!done) {
    const sum = [...(await budgets(model)).values()].reduce((a, b) => a + b, 0);
    max = Math.max(max, sum);
    await new Promise((r) => setTimeout(r, 20));
  }
  return max;
}

describe('per-daemon slot budgets', () => {
  it('three daemons with one limit never exceed it together, and all of them send', async () => {
    const model = 'budget-three';
    const config = { ...quiet, modelConcurrencyLimits: { [model]: 9 } };
    const daemons = await Promise.all([1, 2, 3].map(() => db.manager(config).run()));
    try {
      const m = db.manager();
      mock.reset();
      const batchId = await createBatch(m, mockTemplates(mock, 240, { model, prefix: 'three-' }));
      const ended = waitForBatchEnd(m, batchId, 240_000);
      const maxSum = await maxBudgetSum(model, ended);
      const status = await ended;
      expect(status.completedRequests).toBe(240);
      expect(mock.maxInFlight.byModel.get(model)).toBeLessThanOrEqual(9);
      expect(maxSum).toBeLessThanOrEqual(9);
      // The limit was used, not just respected.
      expect(mock.maxInFlight.byModel.get(model)).toBeGreaterThanOrEqual(6);
      const { rows } = await db.pool.query(
        `SELECT DISTINCT daemon_id FROM "${db.schema}".requests WHERE batch_id = $1`,
        [batchId],
      );
      // Completed rows keep the daemon that finished them: each daemon got a share of the work.
      expect(rows.map((r) => r.daemon_id).sort()).toEqual(daemons.map((d) => d.id).sort());
    } finally {
      await Promise.all(daemons.map((d) => d.stop()));
    }
    // Stopped daemons release their budgets.
    expect((await budgets(model)).size).toBe(0);
  }, 300_000);

  it('a daemon starting while another holds the whole limit gets its fair share', async () => {
    const model = 'budget-fair';
    const config = { ...quiet, modelConcurrencyLimits: { [model]: 12 } };
    mock.setLatency(300);
    const d1 = await db.manager(config).run();
    let d2: Awaited<ReturnType<ReturnType<TestDb['manager']>['run']>> | undefined;
    try {
      const m = db.manager();
      mock.reset();
      // More rows than the test needs (it cancels the rest): 600 at 12 × 300 ms ended in 15 s, before
      // a loaded machine had the newcomer holding and using its half.
      const batchId = await createBatch(m, mockTemplates(mock, 5000, { model, prefix: 'fair-' }));
      await waitFor(async () => (await budgets(model)).get(d1.id) === 12, 10_000);
      d2 = await db.manager(config).run();
      const second = d2.id;
      // Within a few budget intervals and request lifetimes the newcomer holds half, and uses it.
      await waitFor(async () => ((await budgets(model)).get(second) ?? 0) >= 6, 10_000);
      await waitFor(async () => (await processingBy(second, model)) >= 5, 10_000);
      const shares = await budgets(model);
      expect((shares.get(d1.id) ?? 0) + (shares.get(second) ?? 0)).toBeLessThanOrEqual(12);
      expect(mock.maxInFlight.byModel.get(model)).toBeLessThanOrEqual(12);
      await m.cancelBatch(batchId);
      await waitForBatchEnd(m, batchId, 20_000);
    } finally {
      mock.setLatency(150);
      await Promise.all([d1.stop(), d2?.stop()]);
    }
  });

  it("a dead daemon's budget is respected, then returns to the live ones", async () => {
    const model = 'budget-dead';
    const m = db.manager();
    await m.setModelConcurrency(model, 8);
    // A daemon that holds 6 of the 8 slots and then stops heartbeating (as if SIGKILLed).
    const ghost = randomUUID();
    await db.pool.query(`INSERT INTO "${db.schema}".daemons (id, host, pid) VALUES ($1, 'ghost', 0)`, [
      ghost,
    ]);
    await db.pool.query(
      `INSERT INTO "${db.schema}".model_budgets (model, daemon_id, slots, wanted) VALUES ($1, $2, 6, 6)`,
      [model, ghost],
    );
    // The ghost's heartbeat is in the future, so it counts as alive however slow this machine is,
    // until the test lets it die.
    await db.pool.query(
      `UPDATE "${db.schema}".daemons SET heartbeat_at = now() + interval '1 hour' WHERE id = $1`,
      [ghost],
    );
    const d = await db.manager({ ...quiet, heartbeatIntervalMs: 200, deadDaemonAfterMs: 1500 }).run();
    try {
      mock.reset();
      const batchId = await createBatch(m, mockTemplates(mock, 150, { model, prefix: 'dead-' }));
      // While the ghost counts as alive, the live daemon stays within the 2 slots left.
      await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) >= 2, 60_000, 5);
      await waitFor(() => mock.received >= 10, 60_000, 5);
      expect(mock.maxInFlight.byModel.get(model)).toBe(2);
      expect((await budgets(model)).get(d.id)).toBe(2);
      await db.pool.query(
        `UPDATE "${db.schema}".daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = $1`,
        [ghost],
      );
      // Once the ghost is declared dead its budget is released and the live daemon takes all 8.
      await waitFor(async () => !(await budgets(model)).has(ghost), 60_000);
      await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) >= 7, 60_000, 5);
      const status = await waitForBatchEnd(m, batchId, 60_000);
      expect(status.completedRequests).toBe(150);
      expect(mock.maxInFlight.byModel.get(model)).toBeLessThanOrEqual(8);
    } finally {
      await d.stop();
    }
    // A deadline for hangs: five waits of up to 60 s each.
  }, 300_000);

  const lostCases = [
    { how: 'its row marked stopped', learns: 'heartbeat', model: 'budget-revived' },
    { how: 'its heartbeat older than deadDaemonAfterMs', learns: 'heartbeat', model: 'budget-stale' },
    { how: 'its row marked stopped', learns: 'rebalance', model: 'budget-gone' },
  ] as const;
  for (const { how, learns, model } of lostCases) {
    it(`a daemon declared lost while alive (${how}) aborts its open attempts at its next ${learns}: the upstream is back within the limit`, async () => {
      const limit = 4;
      // Every request of the model is held at the mock until the test ends: nothing ends by itself,
      // so what is in flight there is only what the daemons started and did not abort.
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      mock.setBehaviour(async (req) => {
        if (req.model === model) await gate;
        return { kind: 'ok' };
      });
      const log = memoryLogger();
      const config = { ...quiet, modelConcurrencyLimits: { [model]: limit }, deadDaemonAfterMs: 3_600_000 };
      // Its heartbeat never runs by the clock, only when its session drops (below), so the test says
      // when it learns that it was declared lost; nor do its poll and rebalance (a rebalance would
      // count its open attempts in a budget row again and leave the other daemon no room).
      const hour = 3_600_000;
      const first = await db
        .manager({
          ...config,
          heartbeatIntervalMs: hour,
          pollIntervalMs: hour,
          budgetIntervalMs: hour,
          logger: log.logger,
        })
        .run();
      let second: Awaited<ReturnType<ReturnType<TestDb['manager']>['run']>> | undefined;
      try {
        const m = db.manager();
        mock.reset();
        const batchId = await createBatch(m, mockTemplates(mock, 12, { model, prefix: `${model}-` }));
        await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) === limit, 60_000, 5);
        // Another daemon's reclaim (maintenance.ts): the lost daemon's budgets deleted and its rows
        // handed back, while its attempts are still open at the upstream.
        const s = `"${db.schema}"`;
        const client = await db.pool.connect();
        try {
          await client.query('BEGIN');
          if (how === 'its row marked stopped')
            await client.query(`UPDATE ${s}.daemons SET stopped_at = now() WHERE id = $1`, [first.id]);
          else
            await client.query(
              `UPDATE ${s}.daemons SET heartbeat_at = now() - interval '2 hours' WHERE id = $1`,
              [first.id],
            );
          const released = await client.query(releaseDeadBudgetsSql(s), [3_600_000]);
          const reclaimed = await client.query(reclaimSql(s), [3_600_000]);
          await client.query('COMMIT');
          expect(released.rows.filter((r) => r.model === model).map((r) => r.daemon_id)).toEqual([first.id]);
          expect(reclaimed.rows).toHaveLength(limit);
        } finally {
          client.release();
        }
        // The other daemon takes the freed slots: until the lost one learns of it, the upstream sees
        // both (the window this test bounds).
        second = await db.manager(config).run();
        await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) === 2 * limit, 60_000, 5);
        if (learns === 'heartbeat') {
          // Its session drops: it heartbeats at once (maintenance.ts livenessLost) and finds it was
          // lost (the reconnect's poke may have its rebalance find it first).
          const { rows } = await db.pool.query(
            `SELECT pg_terminate_backend(l.pid) AS ok FROM pg_locks l JOIN ${s}.daemons d
                ON l.classid::bigint = (d.liveness_key >> 32) & 4294967295
               AND l.objid::bigint = d.liveness_key & 4294967295 AND l.objsubid = 1
             WHERE d.id = $1 AND l.locktype = 'advisory' AND l.granted`,
            [first.id],
          );
          expect(rows).toEqual([{ ok: true }]);
        } else {
          // A new batch's notification pokes it: its rebalance finds its budget row gone while its
          // attempts are open (budget.ts), with no heartbeat in between.
          await createBatch(
            m,
            mockTemplates(mock, 1, { model: `${model}-other`, prefix: `${model}-other-` }),
          );
        }
        // Its attempts are aborted: the upstream is back within the limit (they would stay open
        // forever here otherwise, as held answers).
        await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) <= limit, 60_000, 5);
        expect(log.entries.some((e) => String(e.msg).includes('declared lost'))).toBe(true);
        release();
        const status = await waitForBatchEnd(m, batchId, 60_000);
        expect(status.completedRequests).toBe(12);
        expect(mock.inFlight.byModel.get(model) ?? 0).toBe(0);
      } finally {
        release();
        mock.setBehaviour(null);
        await Promise.all([first.stop(), second?.stop()]);
      }
    }, 300_000);
  }

  it('lowering a limit at runtime: in flight falls to the new limit as requests finish, none aborted', async () => {
    const model = 'budget-lower';
    const config = { ...quiet, modelConcurrencyLimits: { [model]: 10 } };
    mock.setLatency(200);
    const daemons = await Promise.all([1, 2].map(() => db.manager(config).run()));
    try {
      const m = db.manager();
      mock.reset();
      // More rows than the test sends (it cancels the rest): on a loaded machine the waits below may
      // last while the daemons go on sending, and 20 must still be left to measure under the new limit.
      const batchId = await createBatch(m, mockTemplates(mock, 2000, { model, prefix: 'lower-' }));
      await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) >= 9, 60_000, 5);
      await m.setModelConcurrency(model, 3);
      // The clock after the change committed: a rebalance whose transaction (and so its updated_at)
      // began later has read the new limit.
      const changedAt = await db.pool.query('SELECT now() AS t');
      // Conditions, not clock time: both daemons have rebalanced since the change and their budgets
      // add up to the new limit (budget.ts: once the requests in flight at the change have ended).
      // On a timeout the error carries the rows last seen (the wait's diagnosis).
      let seen: unknown[] = [];
      await waitFor(async () => {
        const { rows } = await db.pool.query(
          `SELECT daemon_id, slots, wanted, updated_at > $2 AS fresh, updated_at
             FROM "${db.schema}".model_budgets WHERE model = $1 ORDER BY daemon_id`,
          [model, changedAt.rows[0].t],
        );
        seen = rows;
        return rows.filter((r) => r.fresh).length === 2 && rows.reduce((a, r) => a + r.slots, 0) <= 3;
      }, 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; model_budgets rows last seen: ${JSON.stringify(seen)}`);
      });
      await waitFor(() => (mock.inFlight.byModel.get(model) ?? 0) <= 3, 60_000, 5);
      mock.reset();
      // Measure over the next 20 requests the daemons start.
      await waitFor(() => mock.received >= 20, 60_000, 5);
      expect(mock.maxInFlight.byModel.get(model)).toBeLessThanOrEqual(3);
      // Still sending under the new limit.
      expect(mock.maxInFlight.byModel.get(model)).toBeGreaterThanOrEqual(1);
      const sum = [...(await budgets(model)).values()].reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual(3);
      // Nothing was aborted or failed by the change: every request that ended so far completed. The
      // stored results trail the mock's answers, so the test waits for more than 20 stored rather
      // than reading the count once.
      const counts = async () =>
        (
          await db.pool.query(
            `SELECT count(*) FILTER (WHERE state = 'completed')::int AS ok,
                    count(*) FILTER (WHERE state IN ('failed', 'canceled'))::int AS bad,
                    count(*) FILTER (WHERE attempt > 1)::int AS resent
               FROM "${db.schema}".requests WHERE batch_id = $1`,
            [batchId],
          )
        ).rows[0] as { ok: number; bad: number; resent: number };
      const stored = await waitFor(async () => {
        const c = await counts();
        return c.ok > 20 ? c : null;
      });
      expect(stored.bad).toBe(0);
      expect(stored.resent).toBe(0);
      await m.cancelBatch(batchId);
      await waitForBatchEnd(m, batchId, 20_000);
    } finally {
      mock.setLatency(150);
      await Promise.all(daemons.map((d) => d.stop()));
    }
  }, 300_000);

  it('a limiter that throws is logged; it neither crashes the daemon nor loses writes', async () => {
    const model = 'budget-limiter';
    let wants = 0;
    const limiter: Limiter = {
      want(): number {
        // Throws on its first calls: the model waits (nothing claimed) and then proceeds.
        if (wants++ < 3) throw new Error('want exploded');
        return 5;
      },
      onOutcome(): void {
        throw new Error('onOutcome exploded');
      },
    };
    const log = memoryLogger();
    const d = await db.manager({ ...quiet, logger: log.logger, limiter }).run();
    try {
      const m = db.manager();
      const batchId = await createBatch(m, mockTemplates(mock, 30, { model, prefix: 'lim-' }));
      const status = await waitForBatchEnd(m, batchId, 30_000);
      expect(status.completedRequests).toBe(30);
      expect(log.entries.some((e) => e.msg === 'limiter.onOutcome threw')).toBe(true);
      expect(log.entries.some((e) => e.msg === 'limiter.want threw; claiming nothing of the model')).toBe(
        true,
      );
    } finally {
      await d.stop();
    }
  });
});
