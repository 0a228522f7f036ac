import { Readable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, ValidationError } from '../../src/domain/errors.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { jsonlLines } from '../../src/store/files/content-lines.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

interface Line {
  id: string;
  custom_id: string;
  response: { status_code: number; body: unknown } | null;
  error: { code: string; message: string } | null;
}

let db: TestDb;
let mock: MockUpstream;
let manager: PostgresRequestManager;
let batchId: string;
let fileId: string;

async function collect(lines: AsyncIterable<string>): Promise<Line[]> {
  const out: Line[] = [];
  for await (const line of lines) out.push(JSON.parse(line) as Line);
  return out;
}

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour(
    (req): MockBehaviour =>
      Number(req.customId?.split('-')[1]) % 4 === 3
        ? { kind: 'status', status: 422, body: { error: { message: `no ${req.customId}` } } }
        : { kind: 'ok' },
  );
  manager = db.manager({ pollIntervalMs: 100, logger: () => {} });
  fileId = await manager.createFile('in.jsonl', null, mockTemplates(mock, 20, { prefix: 'q-' }), {
    owner: 'ann',
  });
  batchId = await manager.createBatch(fileId, { owner: 'ann' });
  const daemon = await manager.run();
  await waitForBatchEnd(manager, batchId);
  await daemon.stop();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

describe('results as streams of lines', () => {
  it('getBatchResults: completed, failed or all, in the output and error files format', async () => {
    const completed = await collect(manager.getBatchResults(batchId, { include: 'completed' }));
    const failed = await collect(manager.getBatchResults(batchId, { include: 'failed' }));
    const all = await collect(manager.getBatchResults(batchId));
    expect(completed).toHaveLength(15);
    expect(failed).toHaveLength(5);
    expect(all.map((l) => l.custom_id)).toEqual([...completed, ...failed].map((l) => l.custom_id));
    for (const l of completed) {
      expect(l.id).toMatch(/^batch_req_[0-9a-f]{32}$/);
      expect(l).toMatchObject({ response: { status_code: 200 }, error: null });
      expect((l.response!.body as { object: string }).object).toBe('chat.completion');
    }
    expect(failed.map((l) => l.custom_id).sort()).toEqual(['q-11', 'q-15', 'q-19', 'q-3', 'q-7']);
    expect(failed[0]!.response!.status_code).toBe(422);
  });

  it('getFileContent: the output, error and input files', async () => {
    const batch = await manager.getBatch(batchId);
    const output = await collect(manager.getFileContent(batch.outputFileId!));
    expect(output.map((l) => l.custom_id).sort()).toEqual(
      (await collect(manager.getBatchResults(batchId, { include: 'completed' })))
        .map((l) => l.custom_id)
        .sort(),
    );
    expect(await collect(manager.getFileContent(batch.errorFileId!))).toHaveLength(5);
    const input = [] as { custom_id: string; url: string; body: { model: string } }[];
    for await (const line of manager.getFileContent(fileId)) input.push(JSON.parse(line));
    expect(input).toHaveLength(20);
    expect(input[0]).toMatchObject({
      custom_id: 'q-0',
      url: '/v1/chat/completions',
      body: { model: 'gpt-mock' },
    });
  });

  it("another owner's batch or file, or a missing one, is not found; a bad include is refused", async () => {
    await expect(collect(manager.getBatchResults(batchId, { owner: 'bob' }))).rejects.toThrow(NotFoundError);
    await expect(collect(manager.getFileContent(fileId, { owner: 'bob' }))).rejects.toThrow(NotFoundError);
    await expect(collect(manager.getBatchResults('00000000-0000-0000-0000-000000000000'))).rejects.toThrow(
      NotFoundError,
    );
    expect(() => manager.getBatchResults(batchId, { include: 'errors' as never })).toThrow(ValidationError);
    // Made but never read: no unhandled rejection, no connection taken.
    manager.getBatchResults('00000000-0000-0000-0000-000000000000');
    expect((await collect(manager.getBatchResults(batchId, { owner: 'ann' }))).length).toBe(20);
  });

  it('leaving the loop early ends the COPY and gives its connection back', async () => {
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
    try {
      const small = new PostgresRequestManager(pool, { schema: db.schema });
      for (let i = 0; i < 5; i++) {
        for await (const line of small.getBatchResults(batchId)) {
          expect(line.startsWith('{"id":"batch_req_')).toBe(true);
          break;
        }
      }
      // With one connection, a leaked COPY would block this forever.
      const { rows } = await pool.query('SELECT 1 AS one');
      expect(rows[0].one).toBe(1);
    } finally {
      await pool.end();
    }
  });
});

describe('jsonlLines', () => {
  it('joins lines and characters cut across chunks, and yields a last line without a newline', async () => {
    const text = 'first €uro line\nsecond\n\nthird ✓';
    const bytes = Buffer.from(text);
    // Every split point, including inside the three-byte characters.
    for (let cut = 0; cut <= bytes.length; cut++) {
      const chunks = [bytes.subarray(0, cut), bytes.subarray(cut)].filter((c) => c.length > 0);
      const lines: string[] = [];
      for await (const l of jsonlLines(Readable.from(chunks))) lines.push(l);
      expect(lines).toEqual(['first €uro line', 'second', '', 'third ✓']);
    }
  });
});
