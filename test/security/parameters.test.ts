import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/domain/errors.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { startCli } from '../cli/support/cli.js';
import { BOUNDARY, multipartBody } from '../reliability/support/multipart.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { createTestDb, TEST_DATABASE_URL, template } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * Finding 4 of issue 17 and the parameter bounds around it: `completion_window: "999999999d"`
 * answered 500 and `"100000000h"` was accepted (a batch expiring in the year 13434); 5xx errors
 * were logged only with --verbose. Every parameter is now bounded with a 400 naming it, and every
 * 5xx is logged with its request id and cause. Also: a multipart upload with two file parts was
 * cut to its first silently; now it is refused.
 */

let t: TestServer;
let fileId = '';

beforeAll(async () => {
  t = await startTestServer();
  fileId = (await upload(t.alice, jsonl([chatLine(1)]))).id;
});
afterAll(() => t?.close());

/** The error a call ends with, as the official client reports it (status, param, code, headers). */
async function refusal(call: Promise<unknown>) {
  try {
    await call;
  } catch (err) {
    const e = err as InstanceType<typeof OpenAI.APIError>;
    return {
      status: e.status,
      param: e.param,
      code: e.code,
      message: e.message,
      retry: e.headers?.get('x-should-retry'),
    };
  }
  throw new Error('expected a refusal');
}

const create = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  t.alice.batches.create(
    { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h', ...body } as never,
    { headers },
  );

describe('batch parameters', () => {
  it('refuses completion windows past what the server allows with a 400 naming completion_window', async () => {
    for (const window of [
      '999999999d',
      '100000000h',
      '31d',
      '745h',
      '1e9s',
      '9'.repeat(400) + 'd',
      '24 hours',
      '0h',
    ]) {
      const r = await refusal(create({ completion_window: window }));
      expect(r, window).toMatchObject({
        status: 400,
        param: 'completion_window',
        code: 'invalid_completion_window',
        retry: 'false',
      });
      if (/^\d+[dh]$/.test(window) && window.length < 20 && window !== '0h')
        expect(r.message, window).toContain('at most 30d');
    }
    // Up to the limit is fine.
    expect((await create({ completion_window: '30d' })).completion_window).toBe('30d');
    expect((await create({ completion_window: '720h' })).completion_window).toBe('720h');
    const { rows } = await t.db.pool.query(
      `SELECT max(expires_at) < now() + interval '31 days' AS bounded FROM ${t.s}.batches`,
    );
    expect(rows[0].bounded).toBe(true);
  });

  it('refuses over-long windows in the library too (365 days at most)', async () => {
    const manager = t.db.manager();
    const file = await manager.createFile('in.jsonl', null, [template(1)]);
    for (const window of ['366d', '100000000h', '999999999d']) {
      await expect(manager.createBatch(file, { completionWindow: window }), window).rejects.toBeInstanceOf(
        ValidationError,
      );
    }
    expect(await manager.createBatch(file, { completionWindow: '365d' })).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('bounds metadata, ids and the idempotency key, naming each', async () => {
    const cases: [Record<string, unknown>, Record<string, string>, string][] = [
      [
        { metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) },
        {},
        'metadata',
      ],
      [{ metadata: { k: 'v'.repeat(513) } }, {}, 'metadata'],
      [{ metadata: { ['k'.repeat(65)]: 'v' } }, {}, 'metadata'],
      [{ metadata: 'not an object' }, {}, 'metadata'],
      [{ metadata: { k: 1 } }, {}, 'metadata'],
      [{ input_file_id: `file-${'a'.repeat(1000)}` }, {}, 'input_file_id'],
      [{ input_file_id: 7 }, {}, 'input_file_id'],
      [{ endpoint: '/v1/other' }, {}, 'endpoint'],
      [{}, { 'Idempotency-Key': 'k'.repeat(256) }, 'idempotency_key'],
    ];
    for (const [body, headers, param] of cases) {
      const r = await refusal(create(body, headers));
      expect(r, JSON.stringify(body).slice(0, 80)).toMatchObject({ status: 400, param, retry: 'false' });
      // Messages do not echo a huge value back.
      expect(r.message.length).toBeLessThan(400);
    }
    // 255 characters is a key; it is kept whole (it used to be cut to 255 silently).
    const key = 'k'.repeat(255);
    const a = await create({}, { 'Idempotency-Key': key });
    expect((await create({}, { 'Idempotency-Key': key })).id).toBe(a.id);
  });

  it('bounds list parameters with a 400 naming them', async () => {
    for (const [path, param] of [
      ['/v1/batches?limit=101', 'limit'],
      ['/v1/batches?limit=0', 'limit'],
      ['/v1/batches?limit=abc', 'limit'],
      ['/v1/files?limit=10001', 'limit'],
      ['/v1/files?order=sideways', 'order'],
    ] as const) {
      const res = await fetch(`${t.server.url}${path}`, {
        headers: { authorization: `Bearer ${t.aliceKey}` },
      });
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param, path).toBe(param);
    }
  });
});

describe('uploads', () => {
  async function post(body: Buffer) {
    const res = await fetch(`${t.server.url}/v1/files`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t.aliceKey}`,
        'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      },
      body,
    });
    return {
      status: res.status,
      error: ((await res.json()) as { error?: { code: string; param: string } }).error,
    };
  }
  const count = async () =>
    (await t.db.pool.query(`SELECT count(*)::int AS n FROM ${t.s}.request_templates`)).rows[0].n as number;

  it('refuses a multipart upload with two file parts instead of dropping the second, storing nothing', async () => {
    const before = await count();
    const first = multipartBody(jsonl([chatLine(1), chatLine(2)]));
    const second = Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="second.jsonl"\r\n` +
        `Content-Type: application/jsonl\r\n\r\n${jsonl([chatLine(3)])}\r\n--${BOUNDARY}--\r\n`,
    );
    // The first body without its closing boundary, then a second file part.
    const twoFiles = Buffer.concat([first.subarray(0, first.length - `--${BOUNDARY}--\r\n`.length), second]);
    expect(await post(twoFiles)).toMatchObject({
      status: 400,
      error: { code: 'multiple_files', param: 'file' },
    });
    // Another name for the second part is no better.
    const other = Buffer.from(second.toString().replace('name="file"', 'name="file2"'));
    const renamed = Buffer.concat([first.subarray(0, first.length - `--${BOUNDARY}--\r\n`.length), other]);
    expect(await post(renamed)).toMatchObject({ status: 400, error: { code: 'multiple_files' } });
    expect(await count()).toBe(before);
    // One file part is still fine.
    expect((await post(first)).status).toBe(200);
  });

  it('refuses a file name over 255 characters', async () => {
    const body = multipartBody(jsonl([chatLine(1)]), `${'n'.repeat(300)}.jsonl`);
    expect(await post(body)).toMatchObject({
      status: 400,
      error: { code: 'invalid_filename', param: 'file' },
    });
  });
});

describe('5xx answers of fusillade serve', () => {
  it('are logged on stderr with their request id and cause without --verbose', async () => {
    const db = await createTestDb();
    const serve = startCli(
      ['serve', '--database-url', TEST_DATABASE_URL, '--schema', db.schema, '--port', '0', '--no-daemon'],
      { env: {}, timeoutMs: 120_000 },
    );
    try {
      const url = await waitFor(
        () => /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)?.[1],
        60_000,
      );
      const key = (await createApiKey(db.pool, db.schema, { owner: 'alice' })).key;
      const client = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0 });
      // A table gone from under the server: every batch query fails with a 500.
      await db.pool.query(`ALTER TABLE "${db.schema}".batches RENAME TO batches_gone`);
      const err = await client.batches.list().catch((e: InstanceType<typeof OpenAI.APIError>) => e);
      await db.pool.query(`ALTER TABLE "${db.schema}".batches_gone RENAME TO batches`);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(500);
      const requestId = (err as InstanceType<typeof OpenAI.APIError>).requestID;
      expect(requestId).toMatch(/^req_/);
      const entry = await waitFor(() =>
        serve
          .output()
          .stderr.split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((e) => e.requestId === requestId),
      );
      expect(entry).toMatchObject({ level: 'error', msg: 'request failed', status: 500, errorCode: '42P01' });
      expect(String(entry.error)).toContain('does not exist');
      expect(Array.isArray(entry.stack)).toBe(true);
      // Not the key, nor anything of the request's body.
      expect(serve.output().stderr).not.toContain(key);
    } finally {
      serve.kill('SIGTERM');
      await serve.exited;
      await db.close();
    }
  }, 120_000);
});
