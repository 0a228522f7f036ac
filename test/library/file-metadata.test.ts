import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonHandle, PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
let manager: PostgresRequestManager;
let daemon: DaemonHandle;
let refuse = true;

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour((req): MockBehaviour => {
    const n = Number(req.customId?.split('-')[1]);
    // Three of thirteen are refused while `refuse` holds: one with JSON, two with an HTML page.
    if (refuse && n >= 10) {
      return n === 10
        ? { kind: 'status', status: 400, body: { error: { message: 'bad request 10' } } }
        : { kind: 'status', status: 403, body: `<html>\n<p>"denied" ${n}</p>\n</html>` };
    }
    return { kind: 'ok' };
  });
  manager = db.manager({ pollIntervalMs: 100, logger: () => {} });
  daemon = await manager.run();
});
afterAll(async () => {
  await daemon.stop();
  await mock.close();
  await db.close();
});

/** The file's content as the API would send it: its bytes and lines. */
async function content(fileId: string) {
  let bytes = 0;
  let lines = 0;
  for await (const line of manager.getFileContent(fileId)) {
    JSON.parse(line);
    bytes += Buffer.byteLength(line) + 1;
    lines++;
  }
  return { bytes, lines };
}

describe('output and error file metadata', () => {
  it('match the batch: real sizes and line counts, also after retries', async () => {
    const batchId = await createBatch(manager, mockTemplates(mock, 13, { prefix: 'm-' }));
    const first = await waitForBatchEnd(manager, batchId);
    expect(first).toMatchObject({ completedRequests: 10, failedRequests: 3 });
    const batch = await manager.getBatch(batchId);
    const output = await manager.getFile(batch.outputFileId!);
    const errors = await manager.getFile(batch.errorFileId!);
    expect(output).toMatchObject({ purpose: 'batch_output', templateCount: 10, sourceBatchId: batchId });
    expect(errors).toMatchObject({ purpose: 'batch_error', templateCount: 3 });
    expect(output.sizeBytes).toBe((await content(output.id)).bytes);
    // The HTML bodies are quoted in their lines: measured as quoted.
    expect(errors.sizeBytes).toBe((await content(errors.id)).bytes);
    expect(output.sizeBytes).toBeGreaterThan(0);

    refuse = false;
    expect(await manager.retryFailedRequests(batchId)).toBe(3);
    const second = await waitForBatchEnd(manager, batchId);
    expect(second).toMatchObject({ completedRequests: 13, failedRequests: 0 });
    const after = await manager.getBatch(batchId);
    // The same output file, now with every line; no error file any more.
    expect(after.outputFileId).toBe(output.id);
    expect(after.errorFileId).toBeNull();
    const output2 = await manager.getFile(output.id);
    expect(output2.templateCount).toBe(13);
    expect(output2.sizeBytes).toBe((await content(output.id)).bytes);
    expect(output2.sizeBytes).toBeGreaterThan(output.sizeBytes);
    // The former error file says what it holds now: nothing.
    expect(await manager.getFile(errors.id)).toMatchObject({ templateCount: 0, sizeBytes: 0 });
    expect(await content(errors.id)).toEqual({ bytes: 0, lines: 0 });
    // The stored rows agree too (for readers of the tables).
    const { rows } = await db.pool.query(
      `SELECT purpose, template_count FROM ${manager.schema}.files WHERE source_batch_id = $1 ORDER BY purpose`,
      [batchId],
    );
    expect(rows).toEqual([
      { purpose: 'batch_error', template_count: 0 },
      { purpose: 'batch_output', template_count: 13 },
    ]);
    // A list page measures the same way.
    const listed = await manager.listFiles({ purpose: 'batch_output' });
    expect(listed.data.find((f) => f.id === output.id)).toMatchObject({
      templateCount: 13,
      sizeBytes: output2.sizeBytes,
    });
  });

  it("an ended batch's file is measured once and kept with the batch's end, not re-read from its requests", async () => {
    refuse = false;
    const batchId = await createBatch(manager, mockTemplates(mock, 5, { prefix: 'k-' }));
    await waitForBatchEnd(manager, batchId);
    const outputId = (await manager.getBatch(batchId)).outputFileId!;
    const measured = await manager.getFile(outputId);
    expect(measured.sizeBytes).toBe((await content(outputId)).bytes);
    const kept = await db.pool.query(
      `SELECT f.size_bytes::int AS size, f.measured_for = b.finished_at AS current
         FROM ${manager.schema}.files f JOIN ${manager.schema}.batches b ON b.id = f.source_batch_id WHERE f.id = $1`,
      [outputId],
    );
    expect(kept.rows).toEqual([{ size: measured.sizeBytes, current: true }]);
    // What is read back is the kept figure (here altered behind the reader's back), for one file and a list page.
    await db.pool.query(`UPDATE ${manager.schema}.files SET size_bytes = 7 WHERE id = $1`, [outputId]);
    expect((await manager.getFile(outputId)).sizeBytes).toBe(7);
    const page = await manager.listFiles({ purpose: 'batch_output', limit: 100 });
    expect(page.data.find((f) => f.id === outputId)?.sizeBytes).toBe(7);
    // A batch that is no longer ended at that instant is measured afresh.
    await db.pool.query(
      `UPDATE ${manager.schema}.files SET measured_for = measured_for - interval '1 second' WHERE id = $1`,
      [outputId],
    );
    expect((await manager.getFile(outputId)).sizeBytes).toBe(measured.sizeBytes);
  });

  it('a batch that fails again gets its error file back, with the right count', async () => {
    refuse = true;
    const batchId = await createBatch(manager, mockTemplates(mock, 12, { prefix: 'r-' }));
    await waitForBatchEnd(manager, batchId);
    const errorFileId = (await manager.getBatch(batchId)).errorFileId!;
    expect((await manager.getFile(errorFileId)).templateCount).toBe(2);
    expect(await manager.retryFailedRequests(batchId)).toBe(2);
    await waitForBatchEnd(manager, batchId);
    const batch = await manager.getBatch(batchId);
    expect(batch.errorFileId).toBe(errorFileId);
    const file = await manager.getFile(errorFileId);
    expect(file.templateCount).toBe(2);
    expect(file.sizeBytes).toBe((await content(errorFileId)).bytes);
  });
});
