import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multipartHead, openAndWrite, readAll, uploadHead } from '../reliability/support/multipart.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from './support.js';

/** Every refusal is a 4xx with the OpenAI envelope naming the line, and stores nothing. */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    maxLinesPerFile: 5,
    maxUploadBytes: 4096,
    maxJsonBytes: 2048,
    uploadIdleTimeoutMs: 300,
    // No default upstream: only listed models can be routed.
    routing: { models: { 'gpt-test': { upstream: 'http://127.0.0.1:9' } } },
  });
});
afterAll(() => t.close());

async function apiError(p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const err = await p.then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(OpenAI.APIError);
  return err;
}

async function stored(): Promise<{ files: number; templates: number }> {
  const { rows } = await t.db.pool.query(
    `SELECT (SELECT count(*)::int FROM ${t.s}.files) AS files, (SELECT count(*)::int FROM ${t.s}.request_templates) AS templates`,
  );
  return rows[0];
}

const good = JSON.stringify(chatLine(1));
const cases: { name: string; content: string | Buffer; status?: number; code: string; line?: number }[] = [
  {
    name: 'a line that is not JSON',
    content: `${good}\n{"custom_id": oops}\n`,
    code: 'invalid_json_line',
    line: 2,
  },
  { name: 'a non-JSONL file (CSV)', content: 'id,prompt\n1,hello\n', code: 'invalid_json_line', line: 1 },
  {
    name: 'a body that is not valid JSON',
    content: `${good}\n{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-test",}}\n`,
    code: 'invalid_json_body',
    line: 2,
  },
  {
    name: 'a line with trailing garbage',
    content: `${good}\n${good} x\n`,
    code: 'invalid_json_line',
    line: 2,
  },
  { name: 'a JSON array line', content: `${good}\n[1,2]\n`, code: 'invalid_json_line', line: 2 },
  {
    name: 'a missing custom_id',
    content: jsonl([chatLine(1), { ...chatLine(2), custom_id: undefined }]),
    code: 'missing_custom_id',
    line: 2,
  },
  {
    name: 'a duplicate custom_id',
    content: jsonl([chatLine(1), chatLine(2), chatLine(1)]),
    code: 'duplicate_custom_id',
    line: 3,
  },
  { name: 'method GET', content: jsonl([chatLine(1, { method: 'GET' })]), code: 'invalid_method', line: 1 },
  {
    name: 'urls that differ between lines',
    content: jsonl([chatLine(1), chatLine(2, { url: '/v1/embeddings' })]),
    code: 'url_mismatch',
    line: 2,
  },
  {
    name: 'an unknown endpoint',
    content: jsonl([chatLine(1, { url: '/v1/fine_tuning/jobs' })]),
    code: 'unknown_endpoint',
    line: 1,
  },
  {
    name: 'a missing body.model',
    content: jsonl([chatLine(1), chatLine(2, { body: { messages: [] } })]),
    code: 'missing_model',
    line: 2,
  },
  {
    name: 'a model with no upstream',
    content: jsonl([chatLine(1), chatLine(2, { body: { model: 'nobody-serves-this' } })]),
    code: 'unknown_model',
    line: 2,
  },
  { name: 'an empty file', content: '', code: 'empty_file' },
  { name: 'a file of blank lines', content: '\n  \r\n\n', code: 'empty_file' },
  {
    name: 'more lines than the limit',
    content: jsonl([1, 2, 3, 4, 5, 6].map((i) => chatLine(i))),
    code: 'too_many_tasks',
    line: 6,
  },
  {
    name: 'more bytes than the limit',
    content: jsonl([chatLine(1, { body: { model: 'gpt-test', pad: 'x'.repeat(5000) } })]),
    status: 413,
    code: 'file_too_large',
  },
  {
    name: 'invalid UTF-8',
    content: Buffer.concat([
      Buffer.from(`${good}\n{"custom_id":"`),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}\n'),
    ]),
    code: 'invalid_utf8',
    line: 2,
  },
];

describe('upload validation', () => {
  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      const before = await stored();
      const err = await apiError(upload(t.alice, c.content));
      expect(err.status).toBe(c.status ?? 400);
      expect(err.type).toBe('invalid_request_error');
      expect(err.code).toBe(c.code);
      expect(err.headers?.get('x-should-retry')).toBe('false');
      expect(err.headers?.get('content-type')).toMatch(/^application\/json/);
      if (c.line !== undefined) {
        expect((err.error as { line?: number }).line).toBe(c.line);
        expect(err.message).toContain(`line ${c.line}`);
      }
      expect(await stored()).toEqual(before);
    });
  }

  it('refuses a purpose other than batch, and a multipart body without a file', async () => {
    const before = await stored();
    const err = await apiError(
      t.alice.files.create({
        file: await toFile(Buffer.from(jsonl([chatLine(1)])), 'a.jsonl'),
        purpose: 'fine-tune',
      }),
    );
    expect(err.status).toBe(400);
    expect(err.code).toBe('invalid_purpose');
    const form = new FormData();
    form.set('purpose', 'batch');
    const res = await fetch(`${t.server.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.aliceKey}` },
      body: form,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('missing_file');
    const notMultipart = await fetch(`${t.server.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.aliceKey}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(notMultipart.status).toBe(400);
    expect(await stored()).toEqual(before);
  });

  it('cuts off an upload that stops sending with a 408, storing nothing', async () => {
    const before = await stored();
    const body = Buffer.concat([multipartHead(), Buffer.from(jsonl([chatLine(1), chatLine(2)]))]);
    // Declares more bytes than it sends, then goes quiet.
    const socket = await openAndWrite(
      t.server.port,
      Buffer.concat([uploadHead(t.server.port, t.aliceKey, body.length + 1000), body]),
    );
    const answer = await readAll(socket, 5000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toContain('upload_timeout');
    expect(await stored()).toEqual(before);
  });

  it('keeps serving after a refused upload on the same connection', async () => {
    await apiError(upload(t.alice, 'nope\n'));
    const ok = await upload(t.alice, jsonl([chatLine(1)]));
    expect(ok.id).toMatch(/^file-/);
  });
});

describe('batch creation validation', () => {
  it('refuses a bad endpoint, window, metadata, file or body, creating nothing', async () => {
    const file = await upload(t.alice, jsonl([chatLine(1), chatLine(2)]));
    const base = {
      input_file_id: file.id,
      endpoint: '/v1/chat/completions' as const,
      completion_window: '24h' as const,
    };
    const count = async () =>
      (await t.db.pool.query(`SELECT count(*)::int AS n FROM ${t.s}.batches`)).rows[0].n as number;
    const before = await count();

    const mismatch = await apiError(t.alice.batches.create({ ...base, endpoint: '/v1/embeddings' }));
    expect(mismatch.status).toBe(400);
    expect(mismatch.code).toBe('url_mismatch');
    expect((mismatch.error as { line?: number }).line).toBe(1);

    const unknownEndpoint = await apiError(
      t.alice.batches.create({ ...base, endpoint: '/v1/nothing' as '/v1/embeddings' }),
    );
    expect([unknownEndpoint.status, unknownEndpoint.param]).toEqual([400, 'endpoint']);

    const window = await apiError(t.alice.batches.create({ ...base, completion_window: 'soon' as '24h' }));
    expect([window.status, window.code]).toEqual([400, 'invalid_completion_window']);

    const metadata = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
    const md = await apiError(t.alice.batches.create({ ...base, metadata }));
    expect([md.status, md.code]).toEqual([400, 'invalid_metadata']);

    const missing = await apiError(t.alice.batches.create({ ...base, input_file_id: '' }));
    expect([missing.status, missing.param]).toEqual([400, 'input_file_id']);
    const unknownFile = await apiError(
      t.alice.batches.create({ ...base, input_file_id: `file-${'0'.repeat(32)}` }),
    );
    expect(unknownFile.status).toBe(404);

    const big = await apiError(t.alice.batches.create({ ...base, metadata: { k: 'x'.repeat(3000) } }));
    expect(big.status).toBe(413);

    const notJson = await fetch(`${t.server.url}/v1/batches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.aliceKey}`, 'content-type': 'application/json' },
      body: '{nope',
    });
    expect(notJson.status).toBe(400);

    const reused = await t.alice.batches.create(base, { headers: { 'Idempotency-Key': 'k1' } });
    const other = await upload(t.alice, jsonl([chatLine(3)]));
    const conflict = await apiError(
      t.alice.batches.create({ ...base, input_file_id: other.id }, { headers: { 'Idempotency-Key': 'k1' } }),
    );
    // 422, not 409 (clients retry a 409 as a race): test/security/idempotency-reuse.test.ts.
    expect(conflict.status).toBe(422);
    expect(conflict.code).toBe('idempotency_key_reused');
    expect(conflict.headers?.get('x-should-retry')).toBe('false');
    expect(await count()).toBe(before + 1);
    expect(reused.request_counts?.total).toBe(2);
  });
});
