import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch } from '../support/mock-upstream.js';

/**
 * A batch large against what the planner's statistics of requests counted refreshes them
 * (store/batches/batches.ts, analyzeAfterLargeBatch): without them the claim's walk of a fresh
 * batch's pending rows was planned as a read and sort of all of them on every claim.
 */

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db.close();
});

const templates = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    endpoint: 'http://127.0.0.1:9',
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: `hello ${i}` }] }),
    model: 'm',
    apiKey: '',
  }));

async function counted(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `SELECT reltuples::float8 AS n FROM pg_class WHERE oid = $1::regclass`,
    [`${db.schema}.requests`],
  );
  return rows[0]!.n;
}

describe('planner statistics after a large batch', () => {
  it('a small batch leaves them alone; a large one refreshes them in its own transaction', async () => {
    const m = db.manager();
    const before = await counted(); // -1: never analysed
    await createBatch(m, templates(10));
    expect(await counted()).toBe(before);
    await createBatch(m, templates(1500));
    expect(await counted()).toBe(1510);
  });
});
