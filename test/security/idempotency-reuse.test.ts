import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError, IdempotencyKeyReusedError } from '../../src/domain/errors.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload, uuidOf } from '../server/support.js';

/**
 * Issue 17 finding 6: an Idempotency-Key reused with different parameters returned the original
 * batch with 200 and no sign of the mismatch. Now: a 422 naming what differs, which the openai
 * client does not retry, and the first batch unchanged.
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

describe('Idempotency-Key reused with other parameters', () => {
  it('is a 422 idempotency_key_reused the openai client does not retry, naming what differs', async () => {
    let calls = 0;
    const client = new OpenAI({
      apiKey: t.aliceKey,
      baseURL: `${t.server.url}/v1`,
      maxRetries: 3,
      fetch: (url, init) => {
        if (String(url).endsWith('/batches')) calls++;
        return fetch(url, init);
      },
    });
    const file = await upload(client, jsonl([chatLine(1), chatLine(2)]));
    const other = await upload(client, jsonl([chatLine(3)]));
    const params = {
      input_file_id: file.id,
      endpoint: '/v1/chat/completions' as const,
      completion_window: '24h' as const,
      metadata: { job: 'nightly', run: '1' },
    };
    const headers = { 'Idempotency-Key': 'reuse-1' };
    const first = await client.batches.create(params, { headers });
    // The same parameters (metadata in another key order) are a repeat: the same batch.
    const again = await client.batches.create(
      { ...params, metadata: { run: '1', job: 'nightly' } },
      { headers },
    );
    expect(again.id).toBe(first.id);
    calls = 0;

    const cases: [Partial<typeof params>, string][] = [
      [{ input_file_id: other.id }, 'input_file_id'],
      [{ metadata: { job: 'nightly', run: '2' } }, 'metadata'],
      [{ completion_window: '48h' as '24h' }, 'completion_window'],
      // (A different endpoint with the same file is refused earlier: its lines' urls do not match.)
    ];
    for (const [change, param] of cases) {
      const err = (await client.batches.create({ ...params, ...change }, { headers }).catch((e) => e)) as
        | InstanceType<typeof OpenAI.APIError>
        | undefined;
      expect(err, param).toBeInstanceOf(OpenAI.UnprocessableEntityError);
      expect(err!.status).toBe(422);
      expect(err!.code).toBe('idempotency_key_reused');
      expect(err!.message).toContain(param);
      expect(err!.message).toContain(first.id);
      expect(err!.message).toMatch(/already used/);
    }
    // One call each: none was retried.
    expect(calls).toBe(cases.length);
    // The first batch is as it was, and no other batch was made with the key.
    const { rows } = await t.db.pool.query(
      `SELECT id, metadata FROM ${t.s}.batches WHERE idempotency_key = 'reuse-1'`,
    );
    expect(rows).toEqual([{ id: uuidOf(first.id), metadata: { job: 'nightly', run: '1' } }]);
  });

  it('is an IdempotencyKeyReusedError (a ConflictError) from the library', async () => {
    const m = t.server.manager;
    const fileId = await m.createFile('f', null, [
      { endpoint: 'http://127.0.0.1:9', method: 'POST', path: '/v1/x', body: '{}', model: 'm', apiKey: '' },
    ]);
    const id = await m.createBatch(fileId, { idempotencyKey: 'lib-1', metadata: { a: '1' } });
    expect(await m.createBatch(fileId, { idempotencyKey: 'lib-1', metadata: { a: '1' } })).toBe(id);
    const err = await m
      .createBatch(fileId, { idempotencyKey: 'lib-1', metadata: { a: '2' }, completionWindow: null })
      .catch((e) => e);
    expect(err).toBeInstanceOf(IdempotencyKeyReusedError);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ batchId: id, differs: ['completionWindow', 'metadata'] });
  });
});
