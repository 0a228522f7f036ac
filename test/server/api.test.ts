import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeApiKey } from '../../src/store/api-keys.js';
import { chatLine, jsonl, settle, startTestServer, type TestServer, upload, uuidOf } from './support.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
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

describe('files', () => {
  it('uploads, retrieves, downloads byte for byte, lists with pagination and deletes', async () => {
    // A body with odd spacing, escapes and non-ASCII must come back exactly as sent.
    const odd =
      '{"model":"gpt-test",  "messages":[{"role":"user","content":"tab\\t é 🚀 \\"q\\""}], "n":1.50}';
    const text = `${JSON.stringify(chatLine(1))}\n{"custom_id":"odd","method":"POST","url":"/v1/chat/completions","body":${odd}}\n`;
    const file = await upload(t.alice, text, 'mine.jsonl');
    expect(file).toMatchObject({
      object: 'file',
      purpose: 'batch',
      filename: 'mine.jsonl',
      status: 'processed',
    });
    expect(file.id).toMatch(/^file-[0-9a-f]{32}$/);
    expect(file.bytes).toBe(Buffer.byteLength(text));
    expect(file._request_id).toMatch(/^req_/);

    const got = await t.alice.files.retrieve(file.id);
    expect(got.id).toBe(file.id);
    expect(got.bytes).toBe(file.bytes);

    const content = await (await t.alice.files.content(file.id)).text();
    const lines = content.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toEqual(chatLine(1));
    expect(lines[1]).toBe(`{"custom_id":"odd","method":"POST","url":"/v1/chat/completions","body":${odd}}`);
    const stored = await t.db.pool.query(`SELECT body FROM ${t.s}.request_templates WHERE custom_id = 'odd'`);
    expect(stored.rows[0].body).toBe(odd);

    const more = [await upload(t.alice, jsonl([chatLine(1)])), await upload(t.alice, jsonl([chatLine(2)]))];
    const ids: string[] = [];
    for await (const f of t.alice.files.list({ limit: 2 })) ids.push(f.id);
    expect(ids.slice(0, 3)).toEqual([more[1]!.id, more[0]!.id, file.id]);
    const page = await t.alice.files.list({ limit: 1, order: 'asc' });
    expect(page.data).toHaveLength(1);
    expect(page.has_more).toBe(true);

    const deleted = await t.alice.files.delete(more[0]!.id);
    expect(deleted).toMatchObject({ id: more[0]!.id, object: 'file', deleted: true });
    expect((await apiError(t.alice.files.retrieve(more[0]!.id))).status).toBe(404);
  });

  it('honours expires_after and refuses a bad one', async () => {
    const { toFile } = await import('openai');
    const file = await t.alice.files.create({
      file: await toFile(Buffer.from(jsonl([chatLine(1)])), 'exp.jsonl'),
      purpose: 'batch',
      expires_after: { anchor: 'created_at', seconds: 7200 },
    });
    expect(file.expires_at! - file.created_at).toBeGreaterThanOrEqual(7199);
    expect(file.expires_at! - file.created_at).toBeLessThanOrEqual(7201);
    const err = await apiError(
      t.alice.files.create({
        file: await toFile(Buffer.from(jsonl([chatLine(1)])), 'exp.jsonl'),
        purpose: 'batch',
        expires_after: { anchor: 'created_at', seconds: 5 },
      }),
    );
    expect([err.status, err.code]).toEqual([400, 'invalid_expires_after']);
  });

  it('accepts a BOM, CRLF line ends and blank lines, keeping line numbers', async () => {
    const text = `\ufeff${JSON.stringify(chatLine(1))}\r\n\r\n${JSON.stringify(chatLine(2))}\r\n`;
    const file = await upload(t.alice, text);
    const { rows } = await t.db.pool.query(
      `SELECT line_number, custom_id FROM ${t.s}.request_templates WHERE file_id = $1 ORDER BY line_number`,
      [uuidOf(file.id)],
    );
    expect(rows).toEqual([
      { line_number: 1, custom_id: 'req-1' },
      { line_number: 3, custom_id: 'req-2' },
    ]);
  });
});

describe('batches', () => {
  it('creates (idempotently), reports progress, completes and serves output and error files', async () => {
    const file = await upload(t.alice, jsonl([1, 2, 3, 4, 5].map((i) => chatLine(i))));
    const params = {
      input_file_id: file.id,
      endpoint: '/v1/chat/completions' as const,
      completion_window: '24h' as const,
      metadata: { job: 'nightly' },
    };
    const headers = { 'Idempotency-Key': 'create-1' };
    const batch = await t.alice.batches.create(params, { headers });
    expect(batch).toMatchObject({
      object: 'batch',
      endpoint: '/v1/chat/completions',
      input_file_id: file.id,
      completion_window: '24h',
      status: 'in_progress',
      request_counts: { total: 5, completed: 0, failed: 0 },
      metadata: { job: 'nightly' },
      output_file_id: null,
      error_file_id: null,
    });
    expect(batch.id).toMatch(/^batch_[0-9a-f]{32}$/);
    expect(Math.abs(batch.created_at - Date.now() / 1000)).toBeLessThan(60);
    expect(batch.expires_at! - batch.created_at).toBeGreaterThanOrEqual(24 * 3600 - 1);
    const again = await t.alice.batches.create(params, { headers });
    expect(again.id).toBe(batch.id);
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.requests WHERE batch_id = $1`,
      [uuidOf(batch.id)],
    );
    expect(rows[0].n).toBe(5);

    const okBody = (line: number) =>
      JSON.stringify({ id: `chatcmpl-${line}`, choices: [{ message: { content: `hi ${line}` } }] });
    await settle(t, uuidOf(batch.id), (line) => {
      // Line 2 is pretty-printed: its newlines must not split the output line.
      if (line <= 2)
        return {
          status: 200,
          body: line === 2 ? JSON.stringify(JSON.parse(okBody(2)), null, 2) : okBody(line),
        };
      if (line === 3) return { status: 200, body: 'plain text, not JSON' };
      if (line === 4)
        return { status: 400, body: '{"error":{"message":"bad request","type":"invalid_request_error"}}' };
      return { errorCode: 'request_timeout', message: 'the upstream did not answer in time' };
    });
    const done = await t.alice.batches.retrieve(batch.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 5, completed: 3, failed: 2 });
    expect(done.usage?.total_tokens).toBe(21);
    expect(done.completed_at).toBeGreaterThan(0);
    expect(done.output_file_id).toMatch(/^file-/);
    expect(done.error_file_id).toMatch(/^file-/);

    const outText = await (await t.alice.files.content(done.output_file_id!)).text();
    const out = outText
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(out.map((l) => l.custom_id)).toEqual(['req-1', 'req-2', 'req-3']);
    expect(out[0]).toMatchObject({
      id: expect.stringMatching(/^batch_req_[0-9a-f]{32}$/),
      response: { status_code: 200, request_id: 'up-1', body: JSON.parse(okBody(1)) },
      error: null,
    });
    expect(out[1].response.body).toEqual(JSON.parse(okBody(2)));
    expect(out[2].response.body).toBe('plain text, not JSON');
    const outFile = await t.alice.files.retrieve(done.output_file_id!);
    expect(outFile).toMatchObject({ purpose: 'batch_output', bytes: Buffer.byteLength(outText) - 2 });

    const errText = await (await t.alice.files.content(done.error_file_id!)).text();
    const errs = errText
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(errs).toEqual([
      {
        id: expect.stringMatching(/^batch_req_/),
        custom_id: 'req-4',
        response: {
          status_code: 400,
          request_id: 'up-4',
          body: { error: { message: 'bad request', type: 'invalid_request_error' } },
        },
        error: null,
      },
      {
        id: expect.stringMatching(/^batch_req_/),
        custom_id: 'req-5',
        response: null,
        error: { code: 'request_timeout', message: 'the upstream did not answer in time' },
      },
    ]);
    const errFile = await t.alice.files.retrieve(done.error_file_id!);
    expect(errFile).toMatchObject({ purpose: 'batch_error', bytes: Buffer.byteLength(errText) });
    const outputs = await t.alice.files.list({ purpose: 'batch_output' });
    expect(outputs.data.map((f) => f.id)).toContain(done.output_file_id);
    // Lists measure output and error files in one statement, the same way retrieve does.
    const listed = new Map((await t.alice.files.list()).data.map((f) => [f.id, f.bytes]));
    expect(listed.get(done.output_file_id!)).toBe(outFile.bytes);
    expect(listed.get(done.error_file_id!)).toBe(errFile.bytes);
    expect(listed.get(file.id)).toBe(file.bytes);

    // A finished batch cannot be cancelled: 400 (never 409, which the client would retry).
    const err = await apiError(t.alice.batches.cancel(batch.id));
    expect(err.status).toBe(400);
    expect(err.code).toBe('invalid_state');
    expect(err.headers?.get('x-should-retry')).toBe('false');
  });

  it('creates one batch for concurrent creates with the same Idempotency-Key', async () => {
    const file = await upload(t.alice, jsonl([chatLine(1), chatLine(2)]));
    const params = {
      input_file_id: file.id,
      endpoint: '/v1/chat/completions' as const,
      completion_window: '24h' as const,
    };
    const headers = { 'Idempotency-Key': 'concurrent-1' };
    const results = await Promise.all([1, 2, 3, 4].map(() => t.alice.batches.create(params, { headers })));
    expect(new Set(results.map((b) => b.id)).size).toBe(1);
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.batches WHERE idempotency_key = 'concurrent-1'`,
    );
    expect(rows[0].n).toBe(1);
    // The same key from another owner is another batch.
    const bobFile = await upload(t.bob, jsonl([chatLine(1)]));
    const bobs = await t.bob.batches.create({ ...params, input_file_id: bobFile.id }, { headers });
    expect(bobs.id).not.toBe(results[0]!.id);
  });

  it('cancels a live batch; its unsent requests land in the error file', async () => {
    const file = await upload(t.alice, jsonl([1, 2, 3].map((i) => chatLine(i))));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const cancelled = await t.alice.batches.cancel(batch.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cancelling_at).toBeGreaterThan(0);
    expect(cancelled.request_counts).toEqual({ total: 3, completed: 0, failed: 3 });
    expect((await t.alice.batches.cancel(batch.id)).status).toBe('cancelled');
    const errText = await (await t.alice.files.content(cancelled.error_file_id!)).text();
    const errs = errText
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(errs).toHaveLength(3);
    expect(errs[0]).toMatchObject({ custom_id: 'req-1', response: null, error: { code: 'batch_cancelled' } });
  });

  it('lists batches newest first with has_more, first_id and last_id', async () => {
    const file = await upload(t.alice, jsonl([chatLine(1)]));
    const created: string[] = [];
    for (let i = 0; i < 3; i++) {
      const b = await t.alice.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      created.push(b.id);
    }
    const page = await t.alice.batches.list({ limit: 2 });
    expect(page.data.map((b) => b.id)).toEqual([created[2], created[1]]);
    expect(page.has_more).toBe(true);
    const raw = (await t.alice.batches
      .list({ limit: 2 })
      .asResponse()
      .then((r) => r.json())) as Record<string, unknown>;
    expect(raw).toMatchObject({ object: 'list', first_id: created[2], last_id: created[1], has_more: true });
    const all: string[] = [];
    for await (const b of t.alice.batches.list({ limit: 2 })) all.push(b.id);
    expect(all.slice(0, 3)).toEqual([created[2], created[1], created[0]]);
    expect(new Set(all).size).toBe(all.length);
    const bobs = (await t.bob.batches.list()).data.map((b) => b.id);
    expect(bobs.filter((id) => created.includes(id))).toEqual([]);
  });
});

describe('downloads', () => {
  it('frees the database connection when a client walks away mid-download', async () => {
    const file = await upload(t.alice, jsonl(Array.from({ length: 3000 }, (_, i) => chatLine(i))));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const big = JSON.stringify({ choices: [{ message: { content: 'x'.repeat(4000) } }] });
    await settle(t, uuidOf(batch.id), () => ({ status: 200, body: big }));
    const done = await t.alice.batches.retrieve(batch.id);
    const res = await fetch(`${t.server.url}/v1/files/${done.output_file_id}/content`, {
      headers: { authorization: `Bearer ${t.aliceKey}` },
    });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.value!.length).toBeGreaterThan(0);
    await reader.cancel();
    // The COPY's connection is discarded, not left checked out mid-COPY.
    await expect.poll(() => t.pool.totalCount - t.pool.idleCount).toBe(0);
    // And the whole file still downloads afterwards: 3,000 lines.
    const text = await (await t.alice.files.content(done.output_file_id!)).text();
    expect(text.trimEnd().split('\n')).toHaveLength(3000);
  });
});

describe('owners and keys', () => {
  it("answers 404 for another owner's ids on every route and hides them from lists", async () => {
    const file = await upload(t.alice, jsonl([chatLine(1)]));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await settle(t, uuidOf(batch.id), () => ({ status: 200, body: '{}' }));
    const outputId = (await t.alice.batches.retrieve(batch.id)).output_file_id!;
    const attempts: (() => Promise<unknown>)[] = [
      () => t.bob.files.retrieve(file.id),
      () => t.bob.files.content(file.id),
      () => t.bob.files.delete(file.id),
      () => t.bob.files.retrieve(outputId),
      () => t.bob.files.content(outputId),
      () => t.bob.batches.retrieve(batch.id),
      () => t.bob.batches.cancel(batch.id),
      () =>
        t.bob.batches.create({
          input_file_id: file.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
        }),
    ];
    for (const attempt of attempts) expect((await apiError(attempt())).status).toBe(404);
    const bobFiles: string[] = [];
    for await (const f of t.bob.files.list()) bobFiles.push(f.id);
    expect(bobFiles).not.toContain(file.id);
    expect(bobFiles).not.toContain(outputId);
    // Still there for its owner.
    expect((await t.alice.files.retrieve(file.id)).id).toBe(file.id);
    // Malformed ids are simply not found.
    for (const attempt of [
      () => t.alice.files.retrieve('file-nothex'),
      () => t.alice.batches.retrieve('batch_123'),
      () => t.alice.batches.retrieve(file.id),
      () => t.alice.files.content('batch_' + 'a'.repeat(32)),
    ]) {
      expect((await apiError(attempt())).status).toBe(404);
    }
  });

  it('needs a valid, unrevoked key on every /v1 route', async () => {
    const anon = await fetch(`${t.server.url}/v1/files`);
    expect(anon.status).toBe(401);
    expect(anon.headers.get('content-type')).toMatch(/^application\/json/);
    expect(anon.headers.get('x-request-id')).toMatch(/^req_/);
    expect(((await anon.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
    expect((await apiError(t.client('fsk_wrong').files.list())).status).toBe(401);
    expect((await apiError(t.client('not-even-a-key').batches.list())).status).toBe(401);

    const { createApiKey } = await import('../../src/store/api-keys.js');
    const key = await createApiKey(t.db.pool, t.s, { owner: 'carol' });
    const carol = t.client(key.key);
    expect((await carol.files.list()).data).toEqual([]);
    await revokeApiKey(t.db.pool, t.s, key.prefix);
    expect((await apiError(carol.files.list())).status).toBe(401);
  });
});

describe('service routes', () => {
  it('serves /healthz, /metrics and /openapi.json', async () => {
    const health = await fetch(`${t.server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', database: 'ok' });
    const metrics = await (await fetch(`${t.server.url}/metrics`)).text();
    expect(metrics).toMatch(
      /fusillade_http_requests_total\{method="POST",route="\/v1\/files",status="200"\} \d+/,
    );
    const doc = (await (await fetch(`${t.server.url}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/files', '/v1/files/{file_id}/content', '/v1/batches/{batch_id}/cancel']),
    );
    // An absolute-form target that is not a URL is a 400, and the server keeps serving.
    const { openAndWrite, readAll } = await import('../reliability/support/multipart.js');
    const socket = await openAndWrite(
      t.server.port,
      Buffer.from('GET http://[bad/v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    );
    expect(await readAll(socket, 5000)).toMatch(/^HTTP\/1\.1 400/);
    const unknown = await fetch(`${t.server.url}/nowhere`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toMatch(/^application\/json/);
  });
});
