import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, memoryLogger, mockTemplates, waitFor } from '../support/mock-upstream.js';

/**
 * A claim that outlives the daemon's client-side deadline (dbTimeoutMs) must not leave rows held
 * under the daemon's id that it does not hold: issue 10's "rows held but not sent go back quickly".
 * The test holds a lock the claim needs (ACCESS EXCLUSIVE on request_templates, which only the
 * claim reads here) until the daemon has given up on at least one claim, then lets go. Before the
 * fix the abandoned statement, still waiting at the server, committed after the one-off orphan
 * reclaim had run, and its rows sat in 'processing' until their lease (10 minutes here) expired.
 */

const N = 12;
const LEASE_MS = 600_000;

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock?.close();
  await db?.close();
});

interface Row {
  state: string;
  attempt: number;
  lease_expires_at: Date | null;
  completed_at: Date | null;
}

async function rows(batchId: string): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `SELECT state, attempt, lease_expires_at, completed_at FROM ${db.schema}.requests
      WHERE batch_id = $1 ORDER BY line_number`,
    [batchId],
  );
  return rows;
}

describe('a claim past its client-side deadline', () => {
  it('leaves no row held but unsent: every row is sent once, long before a lease could expire', async () => {
    const log = memoryLogger();
    const m = db.manager({
      logger: log.logger,
      dbTimeoutMs: 1000,
      leaseMs: LEASE_MS,
      requestTimeoutMs: 30_000,
      pollIntervalMs: 200,
      heartbeatIntervalMs: 200,
      // The reclaim (and so the orphan reclaim a failed claim asks for) runs every second.
      deadDaemonAfterMs: 3000,
      shutdownGraceMs: 1000,
    });
    const batchId = await createBatch(m, mockTemplates(mock, N, { prefix: 'late-', model: 'gpt-late' }));
    const locker = await db.pool.connect();
    let locked = true;
    try {
      await locker.query('BEGIN');
      await locker.query(`LOCK TABLE ${db.schema}.request_templates IN ACCESS EXCLUSIVE MODE`);
      const daemon = await m.run();
      try {
        // The daemon gave up on a claim waiting for the lock, and the orphan reclaim that failure
        // asks for ran after it, with none asked for since (the backoff before the next claim
        // leaves it time): today's one-off reclaim is over before the lock goes...
        await waitFor(() => {
          const i = log.entries.findLastIndex((e) => e.msg === 'claim failed; backing off');
          const j = log.entries.findLastIndex((e) => e.msg === 'orphan reclaim ran');
          return i >= 0 && j > i && log.entries[j]!.again === false;
        }, 60_000);
        // ...and a claim statement of its own is waiting for it at the server (the one given up
        // on, or a later one that will be): the lock's release lets it go on.
        await waitFor(async () => {
          const { rows } = await db.pool.query(
            `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
              WHERE NOT l.granted AND c.relname = 'request_templates' AND c.relnamespace = $1::regnamespace`,
            [db.schema],
          );
          return rows[0].n > 0;
        }, 60_000);
        await locker.query('COMMIT');
        locked = false;
        // Every row is sent and completed while its lease, had it been claimed and kept, is still
        // minutes away: the wait's hang guard (90 s) is far below LEASE_MS.
        let last: Row[] = [];
        const done = await waitFor(async () => {
          last = await rows(batchId);
          return last.every((x) => x.state === 'completed') ? last : null;
        }, 90_000).catch((err) => {
          throw new Error(`${err.message}; rows last seen: ${JSON.stringify(last.map((r) => r.state))}`);
        });
        expect(done).toHaveLength(N);
        // Each was sent once: an abandoned claim's rows went back with their attempt undone, or
        // were never taken.
        for (const r of done) expect(r.attempt).toBe(1);
        const sent = mock.requests.filter((r) => r.customId?.startsWith('late-'));
        expect(sent).toHaveLength(N);
      } finally {
        await daemon.stop();
      }
    } finally {
      if (locked) await locker.query('ROLLBACK').catch(() => {});
      locker.release();
    }
  });
});
