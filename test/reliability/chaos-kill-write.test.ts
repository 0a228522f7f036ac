import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, waitFor } from '../support/mock-upstream.js';
import { DaemonFleet, taggedUrl, uniqueTag } from './support/daemons.js';

/**
 * A daemon SIGKILLed while its result write waits in PostgreSQL. PostgreSQL runs a statement it has
 * received from a client that then died, and commits it: the write lands after the death. Here it
 * waits on a row lock the test holds, so the row reads held by the dead daemon after the kill, and a
 * second daemon's reclaim of that row queues behind the write. The write (the dead daemon's row, its
 * attempt: the guard holds) completes the row; the reclaim then finds it completed and leaves it.
 * The request is completed once and never sent again. test/reliability/chaos-kill.test.ts meets the
 * same write by chance (its `ownWrites`).
 */

const MODEL = 'gpt-kill-write';
const CUSTOM_ID = 'kw-0';

let db: TestDb;
let mock: MockUpstream;
let fleet: DaemonFleet;
const tag = uniqueTag('killwrite');
let answer!: () => void;
const mayAnswer = new Promise<void>((resolve) => {
  answer = resolve;
});

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  // The request's answer waits for the test (the daemons' start-up probe of the upstream does not).
  mock.setBehaviour(async (req) => {
    if (req.customId === CUSTOM_ID) await mayAnswer;
    return { kind: 'ok' };
  });
  fleet = new DaemonFleet({
    databaseUrl: taggedUrl(TEST_DATABASE_URL, tag),
    schema: db.schema,
    upstream: mock.url,
    upstreamApiKey: 'sk-kill-write',
    modelLimits: { [MODEL]: 4 },
    daemon: {
      // Only the liveness lock reveals the death; no lease or statement deadline ends within the test.
      heartbeatIntervalMs: 5000,
      deadDaemonAfterMs: 120_000,
      leaseMs: 240_000,
      requestTimeoutMs: 120_000,
      dbTimeoutMs: 120_000,
      pollIntervalMs: 200,
      shutdownGraceMs: 1000,
    },
  });
});

afterAll(async () => {
  answer();
  await fleet?.stopAll();
  await mock?.close();
  await db?.close();
});

/** The fleet's sessions waiting for a lock on the requests table (a row of it). */
async function waitingOnRequests(): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = $1 AND wait_event_type = 'Lock' AND query ILIKE '%.requests%'`,
    [tag],
  );
  return rows[0].n;
}

describe('chaos: a daemon killed with its result write waiting', () => {
  it('completes the row by the dead daemon’s own write, once, with the reclaim queued behind it', async () => {
    const manager = db.manager({ upstreamRouter: fleet.router() });
    const a = await fleet.start();
    const batchId = await createBatch(manager, [
      {
        endpoint: 'http://127.0.0.1:9',
        method: 'POST',
        path: '/v1/chat/completions',
        body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }),
        model: MODEL,
        apiKey: '',
        customId: CUSTOM_ID,
      },
    ]);
    await waitFor(() => mock.countsByCustomId.get(CUSTOM_ID) === 1, 60_000);

    // The test holds the row while A's request is on the wire; A's result write then waits for it.
    const lock = await db.pool.connect();
    try {
      await lock.query('BEGIN');
      const held = await lock.query(
        `SELECT state, daemon_id, attempt FROM ${db.schema}.requests WHERE batch_id = $1 FOR UPDATE`,
        [batchId],
      );
      expect(held.rows).toEqual([{ state: 'processing', daemon_id: a.daemonId, attempt: 1 }]);
      answer();
      await waitFor(async () => (await waitingOnRequests()) === 1, 60_000);
      a.kill('SIGKILL');
      await a.exited;
      // Dead, and its row still reads held by it: the write has not run.
      const after = await db.pool.query(
        `SELECT state, daemon_id FROM ${db.schema}.requests WHERE batch_id = $1`,
        [batchId],
      );
      expect(after.rows).toEqual([{ state: 'processing', daemon_id: a.daemonId }]);

      // B declares A lost by its free liveness lock; its reclaim of A's row queues behind A's write.
      await fleet.start();
      await waitFor(async () => (await waitingOnRequests()) === 2, 60_000);
      await lock.query('COMMIT');
    } finally {
      await lock.query('ROLLBACK').catch(() => {});
      lock.release();
    }

    const status = await waitFor(
      async () => {
        const s = await manager.getBatchStatus(batchId);
        return s.finishedAt !== null ? s : null;
      },
      60_000,
      50,
    );
    expect(status).toMatchObject({ status: 'completed', completedRequests: 1, failedRequests: 0 });
    const { rows } = await db.pool.query(
      `SELECT state, daemon_id, attempt, response_status FROM ${db.schema}.requests WHERE batch_id = $1`,
      [batchId],
    );
    expect(rows).toEqual([{ state: 'completed', daemon_id: a.daemonId, attempt: 1, response_status: 200 }]);
    await waitFor(() => fleet.logs().includes('declared lost'), 60_000);
    expect(mock.countsByCustomId.get(CUSTOM_ID)).toBe(1);
  }, 300_000);
});
