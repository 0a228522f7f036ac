import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestTemplateInput } from '../../src/domain/templates.js';
import type { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

/*
 * Who goes first (issue 15, src/db/sql/fair-share.ts). Counts who was claimed and completed, never
 * how long anything took: with the claim ordered by deadline alone, owner B's 40 lines would wait
 * behind the ~3,000 of owner A's earlier batch; shared between owners, B's lines take about half the
 * limit from the first claim after B's batch exists, so B ends while A has completed only a few dozen
 * more.
 */

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 12 });
  mock = await startMockUpstream({ latencyMs: 50, recordBodies: false });
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const LIMIT = 8;

/** A file and a batch of `owner`'s. */
async function createBatch(
  m: PostgresRequestManager,
  templates: RequestTemplateInput[],
  options: { owner: string; completionWindow?: string },
): Promise<string> {
  const fileId = await m.createFile('input.jsonl', null, templates, { owner: options.owner });
  return m.createBatch(fileId, options);
}

async function completed(m: PostgresRequestManager, batchId: string): Promise<number> {
  return (await m.getBatchStatus(batchId)).completedRequests;
}

/** Owner A's big batch runs; owner B's small one arrives; returns the counts at B's end. */
async function newcomerScenario(daemons: number, model: string) {
  const config = { modelConcurrencyLimits: { [model]: LIMIT }, pollIntervalMs: 200, logger: () => {} };
  const handles = [];
  for (let i = 0; i < daemons; i++) handles.push(await db.manager(config).run());
  const m = db.manager();
  try {
    mock.reset();
    const a = await createBatch(m, mockTemplates(mock, 3000, { model, prefix: 'a-' }), { owner: 'alice' });
    // A is running, at the limit.
    await waitFor(async () => (await completed(m, a)) >= 50);
    const b = await createBatch(m, mockTemplates(mock, 40, { model, prefix: 'b-' }), { owner: 'bob' });
    const sinceB = mock.requests.length;
    const bEnd = await waitForBatchEnd(m, b, 120_000);
    const aAtB = await m.getBatchStatus(a);
    // A's requests that reached the upstream between B's creation and B's last request: counted in
    // arrival order, so the figure does not grow with the machine's load as a completed count in a
    // stretch of wall-clock time would.
    const after = mock.requests.slice(sinceB).map((r) => r.customId ?? '');
    const lastB = after.findLastIndex((id) => id.startsWith('b-'));
    const aDuringB = after.slice(0, lastB).filter((id) => id.startsWith('a-')).length;
    await m.cancelBatch(a);
    await waitForBatchEnd(m, a, 120_000);
    return { bEnd, aDuringB, aAtB, maxInFlight: mock.maxInFlight.byModel.get(model) ?? 0 };
  } finally {
    await Promise.all(handles.map((h) => h.stop()));
  }
}

describe('fair share between owners', () => {
  it("a newcomer's 40 lines complete while the big batch still runs, never above the limit (one daemon)", async () => {
    const r = await newcomerScenario(1, 'fair-one');
    expect(r.bEnd.completedRequests).toBe(40);
    // While B ran, A kept about half the slots: a few dozen requests sent, not its whole backlog
    // (deadline order alone would have finished ~2,950 of A's lines before B's first).
    expect(r.aDuringB).toBeLessThan(400);
    expect(r.aAtB.pendingRequests).toBeGreaterThan(2000);
    expect(r.maxInFlight).toBeLessThanOrEqual(LIMIT);
  }, 300_000);

  it('the same across three daemons', async () => {
    const r = await newcomerScenario(3, 'fair-three');
    expect(r.bEnd.completedRequests).toBe(40);
    expect(r.aDuringB).toBeLessThan(400);
    expect(r.aAtB.pendingRequests).toBeGreaterThan(2000);
    expect(r.maxInFlight).toBeLessThanOrEqual(LIMIT);
  }, 300_000);
});

describe('weights', () => {
  it('an owner with weight 3 gets about three times the slots of one with weight 1', async () => {
    const model = 'weighted';
    const m = db.manager({
      modelConcurrencyLimits: { [model]: LIMIT },
      pollIntervalMs: 200,
      logger: () => {},
    });
    await m.ownerWeights.set('heavy', 3);
    // Both backlogs exist before any claim, the light owner's first (its deadline is nearer).
    const light = await createBatch(m, mockTemplates(mock, 600, { model, prefix: 'l-' }), { owner: 'light' });
    const heavy = await createBatch(m, mockTemplates(mock, 600, { model, prefix: 'h-' }), { owner: 'heavy' });
    const d = await m.run();
    try {
      await waitFor(async () => (await completed(m, light)) + (await completed(m, heavy)) >= 300);
      const [l, h] = [await completed(m, light), await completed(m, heavy)];
      // 3:1 expected (6 and 2 of the 8 slots); deadline order alone would give the light owner all.
      expect(h).toBeGreaterThan(2 * l);
      expect(l).toBeGreaterThan(0);
      await Promise.all([m.cancelBatch(light), m.cancelBatch(heavy)]);
      await waitForBatchEnd(m, light, 120_000);
      await waitForBatchEnd(m, heavy, 120_000);
    } finally {
      await d.stop();
    }
  }, 300_000);
});

describe('deadlines within an owner', () => {
  it('a 1h batch created after a 24h batch of the same owner is claimed first', async () => {
    const model = 'deadline-one';
    // A mock of its own that records arrival order: the test counts the 24h batch's requests that
    // reach the upstream between the 1h batch's creation and its last request, not how many the
    // 24h batch completed in some stretch of wall-clock time (which grows with the machine's load).
    const ordered = await startMockUpstream({ latencyMs: 50, recordBodies: false });
    const m = db.manager({ modelConcurrencyLimits: { [model]: 2 }, pollIntervalMs: 200, logger: () => {} });
    const d = await m.run();
    try {
      const day = await createBatch(m, mockTemplates(ordered, 400, { model, prefix: 'day-' }), {
        owner: 'carol',
        completionWindow: '24h',
      });
      await waitFor(async () => (await completed(m, day)) >= 5);
      const hour = await createBatch(m, mockTemplates(ordered, 30, { model, prefix: 'hour-' }), {
        owner: 'carol',
        completionWindow: '1h',
      });
      const sinceHour = ordered.requests.length;
      const hourEnd = await waitForBatchEnd(m, hour, 120_000);
      expect(hourEnd.completedRequests).toBe(30);
      const after = ordered.requests.slice(sinceHour).map((r) => r.customId ?? '');
      const lastHour = after.findLastIndex((id) => id.startsWith('hour-'));
      const dayBetween = after.slice(0, lastHour).filter((id) => id.startsWith('day-')).length;
      // Only rows of the 24h batch already in flight, held ahead (at most its 2 slots each) or being
      // claimed when the 1h batch arrived go out before the 1h batch's last row; claimed in creation
      // order instead, all ~395 remaining would.
      expect(dayBetween).toBeLessThan(20);
      await m.cancelBatch(day);
      await waitForBatchEnd(m, day, 120_000);
    } finally {
      await d.stop();
      await ordered.close();
    }
  }, 300_000);

  it('a batch that would miss its deadline at its current rate is raised: counted, and given more slots', async () => {
    const model = 'deadline-risk';
    const registry = new Registry();
    const m = db.manager({
      modelConcurrencyLimits: { [model]: 5 },
      pollIntervalMs: 200,
      logger: () => {},
      metricsRegistry: registry,
    });
    const steady = await createBatch(m, mockTemplates(mock, 5000, { model, prefix: 's-' }), { owner: 'eve' });
    // 10,000 lines in 3 minutes need 55 a second; half of 5 slots at 50 ms give at most 50.
    const urgent = await createBatch(m, mockTemplates(mock, 10_000, { model, prefix: 'u-' }), {
      owner: 'dora',
      completionWindow: '3m',
    });
    const d = await m.run();
    try {
      const raised = async () =>
        (
          await db.pool.query(
            `SELECT id FROM "${db.schema}".batches WHERE id = ANY($1) AND raised_at IS NOT NULL`,
            [[steady, urgent]],
          )
        ).rows.map((r) => r.id);
      expect(await waitFor(async () => ((await raised()).length > 0 ? await raised() : null))).toEqual([
        urgent,
      ]);
      const gauge = async () =>
        (await registry.getSingleMetric('fusillade_batches_at_risk')?.get())?.values[0]?.value;
      expect(await waitFor(async () => ((await gauge()) === 1 ? 1 : null))).toBe(1);
      // Raised, dora counts 4 times: about 4 of the 5 slots against 1 (2.5 each before).
      const [u0, s0] = [await completed(m, urgent), await completed(m, steady)];
      await waitFor(async () => (await completed(m, urgent)) - u0 + (await completed(m, steady)) - s0 >= 250);
      const [u1, s1] = [await completed(m, urgent), await completed(m, steady)];
      expect(u1 - u0).toBeGreaterThan(2 * (s1 - s0));
      await Promise.all([m.cancelBatch(steady), m.cancelBatch(urgent)]);
      await waitForBatchEnd(m, steady, 120_000);
      await waitForBatchEnd(m, urgent, 120_000);
    } finally {
      await d.stop();
    }
  }, 300_000);
});
