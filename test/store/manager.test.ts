import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidStateError, NotFoundError, ValidationError } from '../../src/domain/errors.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(() => db.close());

describe('files', () => {
  it('creates, reads, lists with keyset pagination and deletes files', async () => {
    const m = db.manager();
    const ids: string[] = [];
    for (let f = 0; f < 3; f++) {
      ids.push(await m.createFile(`f${f}`, 'desc', [template(1), template(2)], { owner: 'alice' }));
    }
    const file = await m.getFile(ids[0]!);
    expect(file).toMatchObject({
      name: 'f0',
      description: 'desc',
      purpose: 'batch',
      templateCount: 2,
      owner: 'alice',
    });
    expect(file.sizeBytes).toBeGreaterThan(0);

    const page1 = await m.listFiles({ owner: 'alice', limit: 2 });
    expect(page1.data.map((f) => f.id)).toEqual([ids[2], ids[1]]);
    expect(page1.hasMore).toBe(true);
    const page2 = await m.listFiles({ owner: 'alice', limit: 2, after: page1.data[1]!.id });
    expect(page2.data.map((f) => f.id)).toEqual([ids[0]]);
    expect(page2.hasMore).toBe(false);
    expect((await m.listFiles({ owner: 'bob' })).data).toEqual([]);

    await expect(m.getFile(ids[0]!, { owner: 'bob' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(m.deleteFile(ids[0]!, { owner: 'bob' })).rejects.toBeInstanceOf(NotFoundError);
    await m.deleteFile(ids[0]!, { owner: 'alice' });
    await expect(m.getFile(ids[0]!)).rejects.toBeInstanceOf(NotFoundError);
    await expect(m.getFile('not-a-uuid')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('rejects invalid templates with the index and stores nothing', async () => {
    const m = db.manager();
    const before = await db.pool.query(`SELECT count(*)::int AS n FROM ${m.schema}.files`);
    const cases = [
      template(1, { model: '' }),
      template(1, { body: '{not json' }),
      template(1, { method: 'FETCH' }),
    ];
    for (const bad of cases) {
      const err = await m.createFile('bad', null, [template(0), bad]).catch((e) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).index).toBe(1);
    }
    const dup = await m.createFile('dup', null, [template(0), template(0)]).catch((e) => e);
    expect(dup).toBeInstanceOf(ValidationError);
    expect((dup as ValidationError).issues[0]!.code).toBe('duplicate_custom_id');
    // Streaming: the bad template arrives after many good ones; the transaction rolls back.
    async function* stream() {
      for (let i = 0; i < 20_000; i++) yield template(i);
      yield { ...template(20_000, { body: 'nope' }), lineNumber: 20_001 };
    }
    const err = await m.createFileStream('stream', null, stream()).catch((e) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).index).toBe(20_000);
    expect((err as ValidationError).line).toBe(20_001);
    const after = await db.pool.query(`SELECT count(*)::int AS n FROM ${m.schema}.files`);
    expect(after.rows[0].n).toBe(before.rows[0].n);
    const templates = await db.pool.query(
      `SELECT count(*)::int AS n FROM ${m.schema}.request_templates t JOIN ${m.schema}.files f ON f.id = t.file_id WHERE f.name IN ('bad', 'dup', 'stream')`,
    );
    expect(templates.rows[0].n).toBe(0);
  });

  it('streams a large file and keeps bodies byte for byte', async () => {
    const m = db.manager();
    const odd = '{"model":"m","x":"tab\\t nl\\n back\\\\slash é 🚀", "b": 1}';
    async function* stream() {
      yield template(0, { body: odd, model: 'm' });
      for (let i = 1; i < 5_000; i++) yield template(i);
    }
    const id = await m.createFileStream('big', null, stream());
    expect((await m.getFile(id)).templateCount).toBe(5_000);
    const { rows } = await db.pool.query(
      `SELECT body FROM ${m.schema}.request_templates WHERE file_id = $1 AND line_number = 1`,
      [id],
    );
    expect(rows[0].body).toBe(odd);
  });
});

describe('batches', () => {
  it('spawns several batches from one file, counts by state and lists them', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1), template(2), template(3)], { owner: 'alice' });
    const b1 = await m.createBatch(fileId, {
      owner: 'alice',
      metadata: { k: 'v' },
      endpoint: '/v1/chat/completions',
    });
    const b2 = await m.createBatch(fileId, { owner: 'alice', completionWindow: '1h' });
    expect(b1).not.toBe(b2);
    const status = await m.getBatchStatus(b1);
    expect(status).toMatchObject({
      batchId: b1,
      fileId,
      status: 'in_progress',
      totalRequests: 3,
      pendingRequests: 3,
      inProgressRequests: 0,
      completedRequests: 0,
      failedRequests: 0,
      canceledRequests: 0,
    });
    expect(typeof status.totalRequests).toBe('number');
    const batch = await m.getBatch(b2);
    expect(batch.expiresAt!.getTime() - batch.createdAt.getTime()).toBeGreaterThan(3_590_000);
    expect((await m.getBatch(b1)).metadata).toEqual({ k: 'v' });

    const reqs = await m.getBatchRequests(b1);
    expect(reqs.map((r) => [r.state, r.customId, r.lineNumber])).toEqual([
      ['pending', 'req-1', 1],
      ['pending', 'req-2', 2],
      ['pending', 'req-3', 3],
    ]);
    const page = await m.listBatches({ owner: 'alice', limit: 1 });
    expect(page.data[0]!.id).toBe(b2);
    expect(page.hasMore).toBe(true);
    const next = await m.listBatches({ owner: 'alice', limit: 1, after: b2 });
    expect(next.data[0]!.id).toBe(b1);
    await expect(m.getBatch(b1, { owner: 'bob' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(m.createBatch(fileId, { owner: 'bob' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(m.createBatch(fileId, { completionWindow: 'soon' })).rejects.toBeInstanceOf(ValidationError);
  });

  it('creates a batch once per idempotency key, even when racing', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1), template(2)]);
    const ids = await Promise.all(
      Array.from({ length: 5 }, () => m.createBatch(fileId, { idempotencyKey: 'k1' })),
    );
    expect(new Set(ids).size).toBe(1);
    const { rows } = await db.pool.query(
      `SELECT count(*)::int AS n FROM ${m.schema}.requests WHERE batch_id = $1`,
      [ids[0]],
    );
    expect(rows[0].n).toBe(2);
  });

  it('cancels with one row update: pending requests read as canceled and the batch ends', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1), template(2)]);
    const batchId = await m.createBatch(fileId);
    const cancelled = await m.cancelBatch(batchId);
    expect(cancelled.status).toBe('cancelled');
    const status = await m.getBatchStatus(batchId);
    expect(status).toMatchObject({ pendingRequests: 0, canceledRequests: 2, status: 'cancelled' });
    const reqs = await m.getBatchRequests(batchId);
    expect(reqs.every((r) => r.state === 'canceled' && r.error.code === 'batch_cancelled')).toBe(true);
    // The rows themselves were not rewritten.
    const { rows } = await db.pool.query(
      `SELECT DISTINCT state FROM ${m.schema}.requests WHERE batch_id = $1`,
      [batchId],
    );
    expect(rows).toEqual([{ state: 'pending' }]);
    // Cancelling again is a no-op; a completed batch cannot be cancelled.
    expect((await m.cancelBatch(batchId)).status).toBe('cancelled');
    await expect(m.cancelBatch('00000000-0000-0000-0000-000000000000')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('finalizes a batch whose requests ended, freezing counts, and retries failed ones', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1), template(2), template(3)]);
    const batchId = await m.createBatch(fileId);
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'completed', completed_at = now(), response_status = 200,
              response_body = '{}', input_tokens = 3, output_tokens = 4, total_tokens = 7
        WHERE batch_id = $1 AND line_number <= 2`,
      [batchId],
    );
    expect(await m.finalizeBatch(batchId)).toBe(false); // one still pending
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'failed', completed_at = now(), response_status = 400, response_body = '{"error":{}}'
        WHERE batch_id = $1 AND line_number = 3`,
      [batchId],
    );
    expect(await m.finalizeBatch(batchId)).toBe(true);
    expect(await m.finalizeBatch(batchId)).toBe(false);
    const batch = await m.getBatch(batchId);
    expect(batch.status).toBe('completed');
    expect(batch.outputFileId).not.toBeNull();
    expect(batch.errorFileId).not.toBeNull();
    expect((await m.getFile(batch.outputFileId!)).purpose).toBe('batch_output');
    // Frozen: a later change to rows does not alter the counts.
    const status = await m.getBatchStatus(batchId);
    expect(status).toMatchObject({
      completedRequests: 2,
      failedRequests: 1,
      usage: { inputTokens: 6, outputTokens: 8, totalTokens: 14 },
    });
    await expect(m.cancelBatch(batchId)).rejects.toBeInstanceOf(InvalidStateError);

    expect(await m.retryFailedRequests(batchId)).toBe(1);
    const reopened = await m.getBatchStatus(batchId);
    expect(reopened).toMatchObject({
      status: 'in_progress',
      pendingRequests: 1,
      completedRequests: 2,
      failedRequests: 0,
    });
    const [failedOnly] = await m.getBatchRequests(batchId, { state: 'pending' });
    expect(failedOnly).toMatchObject({ state: 'pending', attempt: 0, lineNumber: 3 });
  });

  it('expires: past the deadline pending requests read as canceled (batch_expired)', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1)]);
    const batchId = await m.createBatch(fileId);
    await db.pool.query(
      `UPDATE ${m.schema}.batches SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [batchId],
    );
    const [r] = await m.getBatchRequests(batchId);
    expect(r).toMatchObject({ state: 'canceled', error: { code: 'batch_expired' } });
    expect(await m.finalizeBatch(batchId)).toBe(true);
    expect((await m.getBatchStatus(batchId)).status).toBe('expired');
    expect((await m.getBatchStatus(batchId)).canceledRequests).toBe(1);
  });

  it('rejects an empty file', async () => {
    const m = db.manager();
    const fileId = await m.createFile('empty', null, []);
    const err = await m.createBatch(fileId).catch((e) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.issues[0].code).toBe('empty_file');
  });
});
