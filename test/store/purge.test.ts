import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { purgeLockKey } from '../../src/db/sql/purge.js';
import { NotFoundError } from '../../src/domain/errors.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb, template } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

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
const n = async (sql: string, values: unknown[] = []) =>
  (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, values)).rows[0]!.n;

describe('purge', () => {
  it('an expired file reads as gone at once, cannot start a batch, and goes with its templates', async () => {
    const m = db.manager(quiet);
    const id = await m.createFile('old.jsonl', null, [template(1), template(2), template(3)], {
      expiresAt: new Date(Date.now() - 1000),
    });
    await expect(m.getFile(id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(m.createBatch(id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await m.listFiles()).data.map((f) => f.id)).not.toContain(id);
    const report = await m.purge({ chunkRows: 2 });
    expect(report).toMatchObject({ inputFiles: 1, templates: 3, batches: 0, incomplete: false });
    expect(await n(`${m.schema}.request_templates WHERE file_id = $1`, [id])).toBe(0);
    expect(await n(`${m.schema}.files WHERE id = $1`, [id])).toBe(0);
  });

  it('output_expires_after: the output files expire, then the requests go in chunks and the batch keeps its counts', async () => {
    const m = db.manager(quiet);
    const daemon = await m.run({ pollIntervalMs: 50 });
    const batchId = await createBatch(m, mockTemplates(mock, 23), { outputExpiresAfterSeconds: 3600 });
    await waitForBatchEnd(m, batchId);
    await daemon.stop();
    const batch = await m.getBatch(batchId);
    const output = await m.getFile(batch.outputFileId!);
    const lives = output.expiresAt!.getTime() - output.createdAt.getTime();
    expect(Math.round(lives / 1000)).toBe(3600);
    expect(await m.purge()).toMatchObject({ requests: 0, outputFiles: 0 }); // not expired yet
    await db.pool.query(`UPDATE ${m.schema}.files SET expires_at = now() WHERE id = $1`, [output.id]);
    await expect(m.getFile(output.id)).rejects.toBeInstanceOf(NotFoundError);
    const report = await m.purge({ chunkRows: 5 });
    expect(report).toMatchObject({ batches: 0, requests: 23, outputFiles: 1 });
    expect(await n(`${m.schema}.requests WHERE batch_id = $1`, [batchId])).toBe(0);
    const status = await m.getBatchStatus(batchId);
    expect([status.status, status.completedRequests]).toEqual(['completed', 23]);
    await expect(m.createBatch(batchId, { outputExpiresAfterSeconds: 5 })).rejects.toMatchObject({
      issues: [{ code: 'invalid_output_expires_after' }],
    });
  });

  it('daemons purge in the background by finishedBatchRetention, one at a time', async () => {
    const m = db.manager(quiet);
    // Another purger holds the lock: a daemon's turn ('skip') stops at once.
    const holder = await db.pool.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock(hashtext($1))', [purgeLockKey(m.schema)]);
    expect(await m.purge({ whenBusy: 'skip' })).toMatchObject({ incomplete: true });
    await holder.query('ROLLBACK');
    holder.release();

    const daemon = await m.run({ pollIntervalMs: 50, finishedBatchRetention: '0s', purgeIntervalMs: 1000 });
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 10));
      await waitFor(async () => (await n(`${m.schema}.batches WHERE id = $1`, [batchId])) === 0);
      expect(await n(`${m.schema}.requests WHERE batch_id = $1`, [batchId])).toBe(0);
    } finally {
      await daemon.stop();
    }
  });
});
