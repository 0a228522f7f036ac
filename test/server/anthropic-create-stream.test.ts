import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support.js';

/**
 * Message batch creation streams its body: past uploadPreBufferBytes the requests go into the
 * database as they arrive; a bad request anywhere stores nothing; an oversized body is a 413.
 */

let t: TestServer;
let alice: Anthropic;

beforeAll(async () => {
  t = await startTestServer({ uploadPreBufferBytes: 1024, maxMessageBatchBytes: 64 * 1024 });
  alice = new Anthropic({ apiKey: t.aliceKey, baseURL: t.server.url, maxRetries: 0 });
});
afterAll(async () => {
  await t?.close();
});

const request = (i: number) => ({
  custom_id: `s-${i}`,
  params: {
    model: 'claude-test',
    max_tokens: 16,
    messages: [{ role: 'user' as const, content: `hello ${i}` }],
  },
});

async function storedFiles(): Promise<number> {
  const { rows } = await t.db.pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${t.s}.files WHERE owner = 'alice' AND deleted_at IS NULL`,
  );
  return Number(rows[0]!.n);
}

describe('POST /v1/messages/batches streams its body', () => {
  it('stores a body larger than the pre-buffer request by request', async () => {
    const created = await alice.messages.batches.create({
      requests: Array.from({ length: 200 }, (_, i) => request(i)),
    });
    expect(created.request_counts.processing).toBe(200);
    const { rows } = await t.db.pool.query<{ custom_id: string; body: string }>(
      `SELECT custom_id, body FROM ${t.s}.request_templates t JOIN ${t.s}.files f ON f.id = t.file_id
        WHERE f.owner = 'alice' ORDER BY t.line_number`,
    );
    expect(rows.map((r) => r.custom_id)).toEqual(Array.from({ length: 200 }, (_, i) => `s-${i}`));
    expect(JSON.parse(rows[7]!.body)).toEqual(request(7).params);
  });

  it('stores nothing when a request past the pre-buffer is bad, and names it', async () => {
    const before = await storedFiles();
    const requests: unknown[] = Array.from({ length: 150 }, (_, i) => request(1000 + i));
    requests[120] = { custom_id: 's-1120', params: { model: 'claude-test', messages: [] } };
    const err = await alice.messages.batches.create({ requests } as never).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect((err as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
      type: 'error',
      error: {
        type: 'invalid_request_error',
        message: expect.stringMatching(/^requests\.120\.params\.max_tokens: /),
      },
    });
    expect(await storedFiles()).toBe(before);
  });

  it('answers 413 in the envelope for a body over the limit, declared or streamed', async () => {
    const big = { requests: Array.from({ length: 800 }, (_, i) => request(i)) };
    const declared = await alice.messages.batches.create(big).then(
      () => null,
      (e: unknown) => e,
    );
    expect(declared).toBeInstanceOf(Anthropic.APIError);
    expect((declared as InstanceType<typeof Anthropic.APIError>).status).toBe(413);
    expect((declared as InstanceType<typeof Anthropic.APIError>).error).toMatchObject({
      type: 'error',
      error: { type: 'request_too_large' },
    });
    // Chunked, without a Content-Length: cut off as it passes the limit.
    const text = JSON.stringify(big);
    const res = await fetch(`${t.server.url}/v1/messages/batches`, {
      method: 'POST',
      headers: { 'x-api-key': t.aliceKey, 'content-type': 'application/json' },
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < text.length; i += 4096)
            controller.enqueue(new TextEncoder().encode(text.slice(i, i + 4096)));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'request_too_large' } });
  });
});
