import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * The database is up but a table is locked (a long migration, VACUUM FULL, a stuck admin session):
 * keys still verify, the data queries block. Every route must answer 503 within the server's
 * deadline rather than hang, and the server must serve normally once the lock goes.
 */

const DB_TIMEOUT_MS = 1000;
let t: TestServer;
let locker: pg.Client;
let batchId = '';

beforeAll(async () => {
  t = await startTestServer({ dbTimeoutMs: DB_TIMEOUT_MS });
  // The set-up retries its 503s: the 1 s deadline can pass on a loaded machine without any lock.
  const setup = t.client(t.aliceKey, { maxRetries: 5 });
  const file = await upload(setup, jsonl([chatLine(1)]));
  batchId = (
    await setup.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    })
  ).id;
  locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await locker.connect();
});

afterAll(async () => {
  await locker?.query('ROLLBACK').catch(() => {});
  await locker?.end().catch(() => {});
  await t?.close();
});

/**
 * One call, timed for the failure message. The abort is the hang guard (60 × the deadline), not a
 * speed check: a route without the deadline waits on the lock until the test releases it, so it is
 * aborted here (status 0) instead of answering 503.
 */
async function timed(path: string): Promise<{ path: string; status: number; ms: number }> {
  const started = Date.now();
  try {
    const res = await fetch(`${t.server.url}${path}`, {
      headers: { authorization: `Bearer ${t.aliceKey}` },
      signal: AbortSignal.timeout(60 * DB_TIMEOUT_MS),
    });
    await res.arrayBuffer();
    return { path, status: res.status, ms: Date.now() - started };
  } catch {
    return { path, status: 0, ms: Date.now() - started };
  }
}

/** Statements waiting for a lock on the test's batches or requests table. */
async function waitingOnLock(): Promise<number> {
  const { rows } = await locker.query(
    `SELECT count(*)::int AS n FROM pg_locks
      WHERE NOT granted AND relation IN ($1::regclass, $2::regclass)`,
    [`${t.s}.batches`, `${t.s}.requests`],
  );
  return rows[0].n;
}

describe('a locked table', () => {
  it('answers 503 at its deadline on every data route while batches and requests are locked, then recovers', async () => {
    const paths = [
      '/v1/batches',
      `/v1/batches/${batchId}`,
      '/api/dashboard/batches',
      `/api/dashboard/batches/${batchId}/progress`,
      `/api/dashboard/batches/${batchId}/requests`,
      '/api/dashboard/operations',
    ];
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${t.s}.batches, ${t.s}.requests IN ACCESS EXCLUSIVE MODE`);
    let during: { path: string; status: number; ms: number }[];
    try {
      during = await Promise.all(paths.map(timed));
      // The queries behind the 503s are cancelled by PostgreSQL, not left waiting on the lock with
      // their connections: while the lock is still held, nothing waits on it any more.
      await waitFor(async () => (await waitingOnLock()) === 0, 60_000, 100);
    } finally {
      await locker.query('ROLLBACK');
    }
    // Every route answered 503 before the lock went (the guard above), not at a wall-clock bound
    // (the deadline + 4 s was a speed check for six answers at once on a loaded machine).
    const unanswered = during.filter((r) => r.status !== 503);
    expect(unanswered, JSON.stringify(during)).toEqual([]);
    // Once the lock is gone, everything answers again.
    for (const path of paths) await waitFor(async () => (await timed(path)).status === 200, 60_000, 100);
  });
});
