import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, settle, startTestServer, type TestServer, upload, uuidOf } from './support.js';

/**
 * Answers of ended batches are rewritten compressed in the background (src/db/compress.ts,
 * migration 0022). Everything that reads them gives the same bytes before and after: output and
 * error files through the openai client (lines in storage order, which a rewrite may change: OpenAI
 * does not promise an order, so lines are compared as sorted lists), their sizes, message batch
 * results through @anthropic-ai/sdk, the dashboard's request detail and the library's reads.
 * Rows are settled in SQL as a daemon would (settle), and the pass is run by hand here; the
 * daemons' background run is tested in test/store/compressed-bodies.test.ts.
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const PRETTY = JSON.stringify(
  { id: 'chatcmpl-1', text: 'héllo ✓ "quoted" \\ back\nslash', n: [1, 2] },
  null,
  2,
);
const LARGE = JSON.stringify({
  id: 'chatcmpl-5',
  choices: [{ message: { content: 'lorem ipsum '.repeat(2_000) } }],
});
/** Over MAX_COMPRESSED_ANSWER_BYTES: PostgreSQL compresses it (TOAST); it stays text. */
const HUGE = JSON.stringify({ id: 'chatcmpl-7', data: 'x'.repeat(70_000) });
const outcomes = (line: number) => {
  switch (line) {
    case 1:
      return { status: 200, body: PRETTY };
    case 2:
      return { status: 200, body: '[{"a":1},{"b":"\\u0001"}]' };
    case 3:
      return { status: 500, body: '<html>Bad gateway</html>' };
    case 4:
      return { errorCode: 'request_timeout', message: 'timed out' };
    case 5:
      return { status: 200, body: LARGE };
    case 7:
      return { status: 200, body: HUGE };
    default:
      return { status: 200, body: `{"id":"chatcmpl-${line}","choices":[]}` };
  }
};

const sortedLines = (text: string) => text.split('\n').sort();
const zipped = async (batchUuid: string) =>
  (
    await t.db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${t.s}.requests WHERE batch_id = $1 AND response_body_z IS NOT NULL`,
      [batchUuid],
    )
  ).rows[0]!.n;

/** What every reader gives for a batch: files, their sizes (measured again), detail, library reads. */
async function everything(batchId: string, batchUuid: string) {
  // Sizes of an ended batch's files are measured once (migration 0018): measured again here.
  await t.db.pool.query(`UPDATE ${t.s}.files SET measured_for = NULL WHERE source_batch_id = $1`, [
    batchUuid,
  ]);
  const batch = await t.alice.batches.retrieve(batchId);
  const output = await (await t.alice.files.content(batch.output_file_id!)).text();
  const errors = await (await t.alice.files.content(batch.error_file_id!)).text();
  const sizes = [
    (await t.alice.files.retrieve(batch.output_file_id!)).bytes,
    (await t.alice.files.retrieve(batch.error_file_id!)).bytes,
  ];
  const m = t.server.manager;
  const requests = await m.getBatchRequests(batchUuid, { owner: 'alice' });
  const details = await Promise.all(
    requests.map((r) => m.dashboardReads.requestDetail(batchUuid, r.id, 'alice').then((d) => d.responseBody)),
  );
  const results: string[] = [];
  for await (const line of m.getBatchResults(batchUuid, { owner: 'alice' })) results.push(line);
  return {
    output: sortedLines(output),
    outputBytes: Buffer.byteLength(output),
    errors: sortedLines(errors),
    errorBytes: Buffer.byteLength(errors),
    sizes,
    bodies: requests.map((r) => ('responseBody' in r ? r.responseBody : null)),
    details,
    results: results.sort(),
  };
}

describe('compressed answers of ended batches', () => {
  it('read the same through every reader, and only completed JSON answers are compressed', async () => {
    const file = await upload(t.alice, jsonl(Array.from({ length: 7 }, (_, i) => chatLine(i + 1))));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const uuid = uuidOf(batch.id);
    await settle(t, uuid, outcomes);
    const before = await everything(batch.id, uuid);
    expect(before.outputBytes).toBe(before.sizes[0]);
    expect(before.errorBytes).toBe(before.sizes[1]);
    expect(await zipped(uuid)).toBe(0);

    const report = await t.server.manager.compressFinished();
    // Lines 1, 2, 5 and 6 are completed JSON answers; 3 and 4 failed and 7 is large: they stay text.
    expect(report).toMatchObject({ answers: 4, incomplete: false });
    expect(report.bytesAfter).toBeLessThan(report.bytesBefore);
    expect(await zipped(uuid)).toBe(4);
    const { rows } = await t.db.pool.query(
      `SELECT line_number, response_body FROM ${t.s}.requests WHERE batch_id = $1 AND response_body_z IS NOT NULL`,
      [uuid],
    );
    expect(rows.every((r) => r.response_body === '')).toBe(true);

    const after = await everything(batch.id, uuid);
    expect(after).toEqual(before);
    expect(after.bodies).toContain(PRETTY);
    expect(after.bodies).toContain(HUGE);
    // Nothing is left to do: a second pass compresses nothing.
    expect(await t.server.manager.compressFinished()).toMatchObject({ answers: 0, batches: 0 });
  });

  it('leaves a batch a retry reopened alone, and compresses it once it has ended again', async () => {
    const file = await upload(t.alice, jsonl([chatLine(1), chatLine(2)]));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const uuid = uuidOf(batch.id);
    await settle(t, uuid, (line) =>
      line === 1 ? { status: 200, body: '{"ok":1}' } : { status: 503, body: 'busy' },
    );
    expect(await t.server.manager.retryFailedRequests(uuid, { owner: 'alice' })).toBe(1);
    // Live again: its completed answer is not touched.
    expect(await t.server.manager.compressFinished()).toMatchObject({ answers: 0 });
    expect(await zipped(uuid)).toBe(0);
    await settle(t, uuid, () => ({ status: 200, body: '{"ok":2}' }));
    expect((await t.alice.batches.retrieve(batch.id)).status).toBe('completed');
    expect(await t.server.manager.compressFinished()).toMatchObject({ answers: 2 });
    expect(await zipped(uuid)).toBe(2);
    const bodies = (await t.server.manager.getBatchRequests(uuid)).map((r) =>
      'responseBody' in r ? r.responseBody : null,
    );
    expect(bodies).toEqual(['{"ok":1}', '{"ok":2}']);
  });

  it('message batch results read the same through @anthropic-ai/sdk', async () => {
    const anthropic = new Anthropic({ apiKey: t.aliceKey, baseURL: t.server.url, maxRetries: 0 });
    const created = await anthropic.messages.batches.create({
      requests: [1, 2, 3].map((i) => ({
        custom_id: `m-${i}`,
        params: {
          model: 'claude-test',
          max_tokens: 16,
          messages: [{ role: 'user' as const, content: `hi ${i}` }],
        },
      })),
    });
    const uuid = uuidOf(created.id.replace(/^msgbatch_/, ''));
    await settle(t, uuid, (line) =>
      line === 3
        ? { status: 429, body: '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}' }
        : {
            status: 200,
            body: JSON.stringify({
              id: `msg_${line}`,
              type: 'message',
              role: 'assistant',
              content: [{ type: 'text', text: `Bonjour ✓ ${line}\n` }],
              stop_reason: 'end_turn',
            }),
          },
    );
    const results = async () => {
      const out: string[] = [];
      for await (const r of await anthropic.messages.batches.results(created.id)) out.push(JSON.stringify(r));
      return out.sort();
    };
    const before = await results();
    expect(before).toHaveLength(3);
    await t.server.manager.compressFinished();
    expect(await zipped(uuid)).toBe(2);
    expect(await results()).toEqual(before);
  });
});
