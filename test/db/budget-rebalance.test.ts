import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockLimitsSql, rebalanceSql } from '../../src/db/sql/queue/budget.js';
import { createTestDb, type TestDb } from '../support/db.js';

/**
 * rebalanceSql (src/db/sql/queue/budget.ts) driven statement by statement, without daemons: each
 * simulated daemon rebalances in turn, and between two of its rebalances every request it had in
 * flight ends and it refills to its ceiling min(slots, target) (the worst case for the limit: a
 * rebalance never catches it between a finished request and its refill).
 */

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db.close();
});

interface Sim {
  id: string;
  inFlight: number;
}

/** One daemon's budget transaction, as src/daemon/budgets.ts runs it; returns its row of the answer. */
async function rebalance(model: string, d: Sim, wanted: number): Promise<{ slots: number; target: number }> {
  const c = await db.pool.connect();
  try {
    await c.query('BEGIN');
    await c.query(lockLimitsSql(db.schema), [[model]]);
    const { rows } = await c.query(rebalanceSql(db.schema), [d.id, [model], [wanted], [d.inFlight], 60_000]);
    await c.query('COMMIT');
    return rows[0];
  } finally {
    c.release();
  }
}

async function slotSum(model: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT coalesce(sum(slots), 0)::int AS n FROM "${db.schema}".model_budgets WHERE model = $1`,
    [model],
  );
  return rows[0].n;
}

/** Rounds of both daemons rebalancing then refilling; returns the largest total in flight seen. */
async function rounds(model: string, daemons: Sim[], n: number): Promise<number> {
  let most = 0;
  for (let i = 0; i < n; i++) {
    for (const d of daemons) {
      const b = await rebalance(model, d, 50);
      d.inFlight = Math.min(b.slots, b.target);
      most = Math.max(
        most,
        daemons.reduce((a, x) => a + x.inFlight, 0),
      );
    }
  }
  return most;
}

describe('rebalanceSql', () => {
  it('a lowered limit: both daemons always refilling still fall within it, and still send', async () => {
    const model = 'rebalance-lower';
    await db.manager().setModelConcurrency(model, 10);
    const daemons: Sim[] = [];
    for (let i = 0; i < 2; i++) {
      const id = randomUUID();
      await db.pool.query(`INSERT INTO "${db.schema}".daemons (id, host, pid) VALUES ($1, 'sim', 0)`, [id]);
      daemons.push({ id, inFlight: 0 });
    }
    expect(await rounds(model, daemons, 3)).toBe(10);
    expect(daemons.map((d) => d.inFlight)).toEqual([5, 5]);

    await db.manager().setModelConcurrency(model, 3);
    // In flight never rises during the drain (nothing starts above the room the others leave).
    expect(await rounds(model, daemons, 4)).toBeLessThanOrEqual(10);
    // Capped by the fair share alone (ceil(3/2) = 2 each), both kept 2 in flight and 2 slots: 4.
    expect(await rounds(model, daemons, 2)).toBeLessThanOrEqual(3);
    expect(await slotSum(model)).toBeLessThanOrEqual(3);
    // The new limit is used, by both daemons.
    expect(daemons.reduce((a, d) => a + d.inFlight, 0)).toBe(3);
    expect(Math.min(...daemons.map((d) => d.inFlight))).toBeGreaterThanOrEqual(1);

    // Raised again: the room is taken at the next rebalances.
    await db.manager().setModelConcurrency(model, 10);
    await rounds(model, daemons, 3);
    expect(daemons.map((d) => d.inFlight)).toEqual([5, 5]);
    expect(await slotSum(model)).toBe(10);
  });
});
