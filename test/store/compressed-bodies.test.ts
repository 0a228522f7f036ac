import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressLockKey } from '../../src/db/compress.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

/**
 * The daemons compress the answers of ended batches in the background (src/db/compress.ts), one
 * at a time; the library's reads give the answers back. Readers against stored bytes before and
 * after a pass: test/server/compressed-bodies.test.ts.
 */

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const quiet = { logger: () => {} };
const zipped = async (batchId: string) =>
  (
    await db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${db.schema}.requests WHERE batch_id = $1 AND response_body_z IS NOT NULL`,
      [batchId],
    )
  ).rows[0]!.n;

describe('background compression', () => {
  it('a daemon compresses an ended batch; its results and requests still read', async () => {
    const m = db.manager(quiet);
    const daemon = await m.run({ pollIntervalMs: 50, purgeIntervalMs: 1000, compressAfterMs: 0 });
    let batchId: string;
    try {
      batchId = await createBatch(m, mockTemplates(mock, 25));
      await waitForBatchEnd(m, batchId);
      await waitFor(async () => (await zipped(batchId)) === 25);
    } finally {
      await daemon.stop();
    }
    const requests = await m.getBatchRequests(batchId);
    const bodies = new Map(requests.map((r) => [r.customId, 'responseBody' in r ? r.responseBody : '']));
    const lines: string[] = [];
    for await (const line of m.getBatchResults(batchId, { include: 'completed' })) lines.push(line);
    expect(lines).toHaveLength(25);
    for (const line of lines) {
      const parsed = JSON.parse(line) as { custom_id: string; response: { body: { choices: unknown[] } } };
      expect(parsed.response.body.choices.length).toBeGreaterThan(0);
      expect(parsed.response.body).toEqual(JSON.parse(bodies.get(parsed.custom_id)!));
    }
  });

  it('is off with compressFinishedBodies false, and a pass skips its turn while another holds the lock', async () => {
    const m = db.manager(quiet);
    // Off: the batch ends (the daemon's finalize ran) and its answers stay text.
    const daemon = await m.run({ pollIntervalMs: 50, compressFinishedBodies: false, compressAfterMs: 0 });
    let batchId: string;
    try {
      batchId = await createBatch(m, mockTemplates(mock, 5));
      await waitForBatchEnd(m, batchId);
    } finally {
      await daemon.stop();
    }
    expect(await zipped(batchId)).toBe(0);
    const holder = await db.pool.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock(hashtext($1))', [compressLockKey(m.schema)]);
    try {
      expect(await m.compressFinished({ whenBusy: 'skip' })).toMatchObject({ incomplete: true, answers: 0 });
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(await m.compressFinished()).toMatchObject({ answers: 5, incomplete: false });
    expect(await zipped(batchId)).toBe(5);
  });
});
