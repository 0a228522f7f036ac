import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/domain/errors.js';
import type { RequestTemplateInput } from '../../src/domain/templates.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, waitForBatchEnd } from '../support/mock-upstream.js';

/* Issue 15 item 4 through the library: createBatch(fileId, { coalesce: true }). Counted, not timed. */

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 6 });
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock?.close();
  await db?.close();
});

function templates(
  n: number,
  distinct: number,
  extra: Partial<RequestTemplateInput> = {},
): RequestTemplateInput[] {
  return Array.from({ length: n }, (_, i) => ({
    endpoint: mock.url,
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model: 'gpt-c', messages: [{ role: 'user', content: `q${i % distinct}` }] }),
    model: 'gpt-c',
    apiKey: 'sk-x',
    customId: `c-${i}`,
    ...extra,
  }));
}

describe('createBatch({ coalesce: true })', () => {
  it('sends each body once; a failed leader and its followers are retried together', async () => {
    const m = db.manager({ pollIntervalMs: 100, maxRetries: 0 });
    let refuse = true;
    mock.reset();
    mock.setBehaviour((req) =>
      refuse && req.body.includes('"q0"') ? { kind: 'status', status: 400 } : { kind: 'ok' },
    );
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, templates(40, 4), { coalesce: true });
      const first = await waitForBatchEnd(m, batchId, 600_000);
      expect(first).toMatchObject({ completedRequests: 30, failedRequests: 10 });
      expect(mock.requests).toHaveLength(4);
      // Usage counts the 3 answers sent, not the 30 lines that got them.
      expect(first.usage.inputTokens).toBe(3 * 10);
      const { rows } = await db.pool.query(
        `SELECT count(*)::int AS followers, count(DISTINCT coalesced_into)::int AS leaders
           FROM ${m.schema}.requests WHERE batch_id = $1 AND coalesced_into IS NOT NULL`,
        [batchId],
      );
      expect(rows[0]).toEqual({ followers: 36, leaders: 4 });

      refuse = false;
      expect(await m.retryFailedRequests(batchId)).toBe(10);
      const second = await waitForBatchEnd(m, batchId, 600_000);
      expect(second).toMatchObject({ completedRequests: 40, failedRequests: 0 });
      expect(mock.requests).toHaveLength(5);
      const lines = await m.getBatchRequests(batchId);
      expect(lines.filter((r) => r.state === 'completed')).toHaveLength(40);
    } finally {
      mock.setBehaviour(null);
      await daemon.stop();
    }
  }, 1_300_000);

  it('keeps lines apart whose key, path or content type differ; a non-boolean option is refused', async () => {
    const m = db.manager();
    const fileId = await m.createFile('mixed.jsonl', null, [
      ...templates(2, 1),
      ...templates(2, 1, { apiKey: 'sk-other' }).map((t, i) => ({ ...t, customId: `k-${i}` })),
      ...templates(2, 1, { path: '/v1/other' }).map((t, i) => ({ ...t, customId: `p-${i}` })),
      ...templates(2, 1, { contentType: 'text/plain' }).map((t, i) => ({ ...t, customId: `t-${i}` })),
    ]);
    const batchId = await m.createBatch(fileId, { coalesce: true });
    const { rows } = await db.pool.query(
      `SELECT count(*) FILTER (WHERE coalesced_into IS NULL)::int AS sent FROM ${m.schema}.requests WHERE batch_id = $1`,
      [batchId],
    );
    // One leader each for the key, the other key and the other path; plain text is never coalesced.
    expect(rows[0]).toEqual({ sent: 5 });
    await m.cancelBatch(batchId);
    await expect(m.createBatch(fileId, { coalesce: 'yes' as unknown as boolean })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });
});
