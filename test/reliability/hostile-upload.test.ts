import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';
import {
  BOUNDARY,
  multipartBody,
  multipartHead,
  multipartTail,
  openAndWrite,
  readAll,
  uploadHead,
} from './support/multipart.js';

/**
 * The hostile corpus (test/fixtures/bad-jsonl, plus big files generated here) through the real
 * server, with the official openai client and raw HTTP. Every refusal is a 4xx naming the line,
 * stores nothing, releases its database connection, and never stops the server serving others.
 */

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'bad-jsonl');
const MAX_UPLOAD = 12 * 1024 * 1024;

interface Case {
  file: string;
  status: number;
  /** The expected error code, or the codes accepted (the reader and the store name bad bodies differently). */
  code?: string | string[];
  line?: number;
  lines?: number[];
}
const manifest = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8')) as Case[];

let t: TestServer;
beforeAll(async () => {
  // Default line limit (50,000); a smaller byte limit than 200 MB keeps the oversize case cheap.
  t = await startTestServer({ maxUploadBytes: MAX_UPLOAD });
});
afterAll(() => t?.close());

async function stored(): Promise<{ files: number; templates: number }> {
  const { rows } = await t.db.pool.query(
    `SELECT (SELECT count(*)::int FROM ${t.s}.files) AS files,
            (SELECT count(*)::int FROM ${t.s}.request_templates) AS templates`,
  );
  return rows[0];
}

/**
 * No pooled client is left checked out (an aborted COPY transaction would hold one). The deadline is
 * a hang guard (a client never released), not a speed check: 5 s was one on a loaded machine, which
 * may take longer to see the socket close and roll back.
 */
async function poolSettles(): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (t.db.pool.totalCount - t.db.pool.idleCount > 0) {
    if (Date.now() > deadline) throw new Error('a database client is still checked out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function refusal(p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const err = await p.then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(OpenAI.APIError);
  return err;
}

function rawUpload(content: Buffer | string, key = t.aliceKey): Promise<Response> {
  return fetch(`${t.server.url}/v1/files`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'multipart/form-data; boundary=fusilladeTestBoundary7MA4YWxkTrZu0gW',
    },
    body: multipartBody(content),
  });
}

/** `n` chat lines of about 110 bytes each, plus `pad` bytes of content. */
function manyLines(n: number, pad = 0): Buffer {
  const parts: string[] = [];
  const padding = 'x'.repeat(pad);
  for (let i = 1; i <= n; i++) {
    parts.push(
      `{"custom_id":"r${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-test","messages":[{"role":"user","content":"hi ${i}${padding}"}]}}\n`,
    );
  }
  return Buffer.from(parts.join(''));
}

describe('hostile corpus through the openai client', () => {
  for (const c of manifest) {
    it(`${c.file} → ${c.status}${c.code ? ` ${[c.code].flat().join('|')}` : ''}${c.line ? ` at line ${c.line}` : ''}`, async () => {
      const before = await stored();
      const content = readFileSync(join(FIXTURES, c.file));
      if (c.status === 200) {
        const file = await upload(t.alice, content, c.file);
        const { rows } = await t.db.pool.query(
          `SELECT line_number FROM ${t.s}.request_templates WHERE file_id = $1 ORDER BY line_number`,
          [uuid(file.id)],
        );
        expect(rows.map((r) => r.line_number)).toEqual(c.lines);
        return;
      }
      const err = await refusal(upload(t.alice, content, c.file));
      expect(err.status).toBe(c.status);
      expect([c.code].flat()).toContain(err.code);
      expect((err.error as { line?: number }).line).toBe(c.line);
      expect(err.message).toContain(`line ${c.line}`);
      expect(await stored()).toEqual(before);
      await poolSettles();
    });
  }
});

function uuid(openaiId: string): string {
  const h = openaiId.replace(/^(file-|batch_)/, '');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

describe('generated hostile files', () => {
  it('refuses 50,001 lines at line 50,001 and accepts exactly 50,000, serving others meanwhile', async () => {
    const before = await stored();
    const big = manyLines(50_001);
    // Healthy traffic from another owner while the big upload streams and is refused.
    const refused = refusal(upload(t.alice, big));
    const healthy = Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const f = await upload(t.bob, jsonl([chatLine(i)]), `small-${i}.jsonl`);
        return (await t.bob.files.retrieve(f.id)).id;
      }),
    );
    const [err, ok] = await Promise.all([refused, healthy]);
    expect(err.status).toBe(400);
    expect(err.code).toBe('too_many_tasks');
    expect((err.error as { line?: number }).line).toBe(50_001);
    expect(ok).toHaveLength(8);
    expect(await stored()).toEqual({ files: before.files + 8, templates: before.templates + 8 });

    const exact = await upload(t.alice, big.subarray(0, big.lastIndexOf('\n', big.length - 2) + 1));
    const n = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.request_templates WHERE file_id = $1`,
      [uuid(exact.id)],
    );
    expect(n.rows[0].n).toBe(50_000);
    await poolSettles();
  });

  it('refuses an upload over the size limit with 413 and stores nothing', async () => {
    const before = await stored();
    // Few, padded lines: over the byte limit while far under the line limit.
    const padded = Buffer.from(
      Array.from(
        { length: 2000 },
        (_, i) => `${JSON.stringify(chatLine(i, { body: { model: 'gpt-test', pad: 'x'.repeat(6500) } }))}\n`,
      ).join(''),
    );
    expect(padded.length).toBeGreaterThan(MAX_UPLOAD);
    const err = await refusal(upload(t.alice, padded));
    expect(err.status).toBe(413);
    expect(err.code).toBe('file_too_large');
    expect(await stored()).toEqual(before);
    await poolSettles();
    // The connection pool and the server are fine afterwards.
    expect((await upload(t.alice, jsonl([chatLine(1)]))).id).toMatch(/^file-/);
  });

  it('refuses an upload declaring more than the limit at once, before its body is sent', async () => {
    const before = await stored();
    // Only the request head and the multipart head go out: a 300 MB body is announced, never sent.
    const declared = 300 * 1024 * 1024;
    const socket = await openAndWrite(
      t.server.port,
      Buffer.concat([uploadHead(t.server.port, t.aliceKey, declared), multipartHead()]),
    );
    // Without the up-front check the server waits for the body (idle timeout 30 s): nothing comes
    // before the connection is cut after LINGER_MS; with it, the answer comes first.
    const answer = await readAll(socket, 20_000);
    socket.destroy();
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer.toLowerCase()).toContain('content-type: application/json');
    const envelope = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    expect(envelope).toEqual({
      error: {
        message: `The upload declares ${declared} bytes; files are limited to ${MAX_UPLOAD} bytes.`,
        type: 'invalid_request_error',
        param: 'file',
        code: 'file_too_large',
      },
    });
    // The official client (it sends a Content-Length) reads the same answer while still sending.
    const err = await refusal(upload(t.alice, Buffer.alloc(40 * 1024 * 1024, 0x20)));
    expect([err.status, err.code]).toEqual([413, 'file_too_large']);
    expect(err.message).toContain('The upload declares');
    expect(await stored()).toEqual(before);
    await poolSettles();
    expect((await upload(t.alice, jsonl([chatLine(1)]))).id).toMatch(/^file-/);
  });

  it('checks an upload without a Content-Length (chunked) as it streams: 413 past the limit', async () => {
    const before = await stored();
    const pad = 'x'.repeat(64 * 1024);
    const line = (i: number) =>
      Buffer.from(`${JSON.stringify(chatLine(i, { body: { model: 'gpt-test', pad } }))}\n`);
    const chunks = Math.ceil(MAX_UPLOAD / line(0).length) + 8;
    let sent = 0;
    let sentBytes = 0;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(multipartHead());
      },
      pull(c) {
        if (sent < chunks) {
          const chunk = line(sent++);
          sentBytes += chunk.length;
          c.enqueue(chunk);
        } else {
          c.enqueue(multipartTail());
          c.close();
        }
      },
    });
    const res = await fetch(`${t.server.url}/v1/files`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t.aliceKey}`,
        'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('file_too_large');
    // The streaming check needed the body up to the limit: far more than the up-front refusal read.
    expect(sentBytes).toBeGreaterThan(MAX_UPLOAD);
    expect(await stored()).toEqual(before);
    await poolSettles();
  });

  it('handles huge single lines: a 6 MB valid line round-trips, a 6 MB unterminated one is refused', async () => {
    const content = 'é🚀'.repeat(1024 * 1024);
    const line = JSON.stringify(chatLine(1, { body: { model: 'gpt-test', content } }));
    expect(Buffer.byteLength(line)).toBeGreaterThan(6 * 1024 * 1024);
    const file = await upload(t.alice, `${line}\n`);
    const { rows } = await t.db.pool.query(
      `SELECT rt.body FROM ${t.s}.request_templates rt WHERE rt.file_id = $1`,
      [uuid(file.id)],
    );
    expect(JSON.parse(rows[0].body).content).toBe(content);

    const before = await stored();
    const err = await refusal(upload(t.alice, `${line.slice(0, -2)}\n`));
    expect([err.status, err.code, (err.error as { line?: number }).line]).toEqual([
      400,
      'invalid_json_line',
      1,
    ]);
    expect(await stored()).toEqual(before);
  });

  it('refuses deeply nested JSON without crashing (no stack overflow escapes)', async () => {
    const before = await stored();
    const deep = `{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-test","x":${'['.repeat(200_000)}${']'.repeat(200_000)}}}\n`;
    const res = await rawUpload(deep);
    // Either accepted as valid JSON or refused as a 400: never a 500 or a dropped connection.
    expect([200, 400]).toContain(res.status);
    if (res.status === 400) {
      expect(((await res.json()) as { error: { line: number } }).error.line).toBe(1);
      expect(await stored()).toEqual(before);
    }
    expect((await fetch(`${t.server.url}/healthz`)).status).toBe(200);
  });

  it('refuses control characters PostgreSQL text cannot hold, with the line, not a 500', async () => {
    // "\u0000" is valid JSON but a NUL cannot be stored in a text column.
    for (const [field, value] of [
      ['custom_id', 'a\u0000b'],
      ['model', 'gpt\u0000test'],
    ] as const) {
      const before = await stored();
      const bad =
        field === 'custom_id'
          ? chatLine(2, { custom_id: value })
          : chatLine(2, { body: { model: value, messages: [] } });
      const res = await rawUpload(jsonl([chatLine(1), bad]));
      const answer = (await res.json()) as { error?: { line?: number } };
      expect(res.status, `${field}: ${JSON.stringify(answer)}`).toBe(400);
      expect(answer.error?.line).toBe(2);
      expect(await stored()).toEqual(before);
      await poolSettles();
    }
  });
});

/**
 * These found three server bugs, fixed since (7955f9d, c2e5774): an upload ending without its
 * closing boundary, or a client hanging up while its upload waited for a connection, raised an
 * uncaught exception; stalled uploads held every pooled connection, so other requests got 503s.
 */

describe('broken uploads over raw HTTP', () => {
  it('a multipart body cut off mid-upload stores nothing and frees its connection', async () => {
    const before = await stored();
    // 11 MB (under the 12 MB limit), cut after 9.4: past the 8 MB pre-buffer, so the rows are
    // streaming into an open COPY when the client vanishes (1.3 MB of 2.6 stayed in the pre-buffer
    // and tested only its abort).
    const content = manyLines(20_000, 440);
    const body = Buffer.concat([multipartHead(), content, multipartTail()]);
    const socket = await openAndWrite(
      t.server.port,
      Buffer.concat([
        uploadHead(t.server.port, t.aliceKey, body.length),
        body.subarray(0, Math.floor(body.length * 0.85)),
      ]),
    );
    // Once the server streams rows into its COPY (a condition, not a fixed 300 ms), vanish.
    await waitFor(async () => {
      const { rows } = await t.db.pool.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE state = 'active' AND query ILIKE 'COPY %' AND strpos(query, $1) > 0`,
        [t.db.schema],
      );
      return rows[0].n === 1;
    });
    socket.destroy();
    await poolSettles();
    expect(await stored()).toEqual(before);
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'idle in transaction' AND query ILIKE '%${t.db.schema}%'`,
    );
    expect(rows[0].n).toBe(0);
    expect(Array.isArray((await t.alice.files.list()).data)).toBe(true);
  });

  it('a multipart body missing its closing boundary is refused, not stored', async () => {
    const before = await stored();
    const body = Buffer.concat([multipartHead(), Buffer.from(jsonl([chatLine(1)]))]);
    const socket = await openAndWrite(
      t.server.port,
      Buffer.concat([uploadHead(t.server.port, t.aliceKey, body.length), body]),
    );
    const answer = await readAll(socket);
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(answer).toContain('invalid_multipart');
    expect(await stored()).toEqual(before);
    await poolSettles();
  });

  it('a declared length larger than what arrives, then a stall, does not block other uploads', async () => {
    // A slow or stalled client must not hold the database: open more stalled uploads than the
    // pool has connections, then expect a healthy upload to go through.
    const before = await stored();
    const stalled = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const body = Buffer.concat([multipartHead(), manyLines(100), multipartTail()]);
        return openAndWrite(
          t.server.port,
          Buffer.concat([uploadHead(t.server.port, t.aliceKey, body.length), body.subarray(0, 2000)]),
        );
      }),
    );
    try {
      await new Promise((r) => setTimeout(r, 200));
      const ok = await upload(t.bob, jsonl([chatLine(1)]), 'healthy.jsonl');
      expect(ok.id).toMatch(/^file-/);
      expect((await t.bob.files.list()).data.length).toBeGreaterThan(0);
    } finally {
      for (const s of stalled) s.destroy();
    }
    await poolSettles();
    expect((await stored()).files).toBe(before.files + 1);
  });

  it('a non-multipart or garbage content type is a clear 400', async () => {
    for (const contentType of ['text/plain', 'multipart/form-data', 'multipart/form-data; boundary=']) {
      const res = await fetch(`${t.server.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.aliceKey}`, 'content-type': contentType },
        body: jsonl([chatLine(1)]),
      });
      expect(res.status, contentType).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    }
  });
});
