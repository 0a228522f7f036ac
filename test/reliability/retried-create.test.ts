import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { TEST_DATABASE_URL } from '../support/db.js';

/**
 * The official client retries a POST that answered 503 (REFERENCE §2), and sends no idempotency key
 * by default. If the server answered 503 at its deadline while the batch insert still committed
 * later, the retry would create a second batch and every request would go upstream twice
 * (REFERENCE §4 lesson 8). A locked batches table makes the insert outlast the deadline.
 */

let t: TestServer;
let locker: pg.Client;

beforeAll(async () => {
  t = await startTestServer({ dbTimeoutMs: 300 });
  locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await locker.connect();
});

afterAll(async () => {
  await locker?.query('ROLLBACK').catch(() => {});
  await locker?.end().catch(() => {});
  await t?.close();
});

/**
 * The set-up's uploads retry their 503s: the server's 300 ms database deadline (for the lock below)
 * can pass on a loaded machine while it stores even two lines, which failed the test before it began.
 */
const setupClient = () => t.client(t.aliceKey, { maxRetries: 5 });

async function batches(): Promise<number> {
  const { rows } = await t.db.pool.query(`SELECT count(*)::int AS n FROM ${t.s}.batches`);
  return rows[0].n;
}

describe('a batch create retried by the client after a 503', () => {
  /**
   * The create has no deadline on purpose (src/server/routes/batches.ts): a 503 while the insert
   * may still commit would invite exactly this duplicate. The table lock outlasts the server's
   * 300 ms database deadline; the client must still see one answer and one batch.
   */
  it('creates one batch, however often the client retries', async () => {
    const file = await upload(setupClient(), jsonl([chatLine(1), chatLine(2)]));
    const client = t.client(t.aliceKey, { maxRetries: 3 });
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${t.s}.batches IN ACCESS EXCLUSIVE MODE`);
    setTimeout(() => void locker.query('ROLLBACK').catch(() => {}), 1500);
    const outcome = await client.batches
      .create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' })
      .then(
        (b) => b.id,
        (err: Error) => err.message,
      );
    await new Promise((r) => setTimeout(r, 500));
    // One call: at most one batch (none if the client gave up).
    expect(await batches(), String(outcome)).toBeLessThanOrEqual(1);
  });

  it('creates exactly one batch when the client sends an Idempotency-Key', async () => {
    const before = await batches();
    const file = await upload(setupClient(), jsonl([chatLine(1), chatLine(2)]));
    const client = t.client(t.aliceKey, { maxRetries: 3 });
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${t.s}.batches IN ACCESS EXCLUSIVE MODE`);
    setTimeout(() => void locker.query('ROLLBACK').catch(() => {}), 1500);
    const created = await client.batches.create(
      { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' },
      { headers: { 'Idempotency-Key': 'retried-create-1' } },
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(created.id).toMatch(/^batch_/);
    expect(await batches()).toBe(before + 1);
  });
});
