import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { startTestServer, type TestServer, upload } from './support.js';

/*
 * Issue 15 item 4: identical requests sent once, opt-in through metadata fusillade_coalesce, driven
 * by the openai client. Counted at the mock; nothing is timed.
 */

const UPSTREAM_KEY = 'sk-upstream-secret-coalesce-0123456789';
let mock: MockUpstream;
let t: TestServer;

beforeAll(async () => {
  mock = await startMockUpstream({ recordBodies: false });
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1/`, upstreamApiKey: UPSTREAM_KEY },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 0 },
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

/** Alice's client, asking again on a 503 (the server's database deadline on a loaded machine). */
const alice = () => t.client(t.aliceKey, { maxRetries: 5 });

/** Until the batch ends; a deadline only against a hang (a loaded shared machine takes what it takes). */
async function waitForEnd(client: OpenAI, id: string): Promise<OpenAI.Batches.Batch> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    // The server answers 503 when its database is slower than its deadline: ask again.
    const batch = await client.batches.retrieve(id).catch((err: unknown) => {
      if (err instanceof OpenAI.APIError && err.status === 503) return null;
      throw err;
    });
    if (batch && ['completed', 'failed', 'cancelled', 'expired'].includes(batch.status)) return batch;
    if (Date.now() > deadline) throw new Error(`batch ${id} is still ${batch?.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An output or error file line, as far as these tests read it. */
interface OutputLine {
  id: string;
  custom_id: string;
  response: { status_code: number; body: { id: string; usage: { total_tokens: number } } };
}

/** Requests of this tag's lines that reached the mock (another test's batch may still be running). */
const sent = (tag: string) => mock.requests.filter((r) => r.customId?.startsWith(`${tag}-`)).length;

const lines = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as OutputLine);

/**
 * Line i asks question i % distinct; every other copy writes the same body with its keys in
 * another order and spaced out (the same after canonical JSON).
 */
function input(tag: string, n: number, distinct: number, question = (q: number) => `question ${q}`): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const q = question(i % distinct);
    const body =
      i % 2 === 0
        ? `{"model":"gpt-test","messages":[{"role":"user","content":${JSON.stringify(q)}}],"temperature":0}`
        : `{ "temperature": 0.0, "messages": [ { "content": ${JSON.stringify(q)}, "role": "user" } ], "model": "gpt-test" }`;
    out.push(`{"custom_id":"${tag}-${i}","method":"POST","url":"/v1/chat/completions","body":${body}}`);
  }
  return `${out.join('\n')}\n`;
}

describe('coalescing through the OpenAI API', () => {
  it('1,000 lines with 100 distinct bodies send 100 requests and write 1,000 output lines', async () => {
    mock.reset();
    const file = await upload(alice(), input('line', 1000, 100));
    const created = await alice().batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { fusillade_coalesce: 'true' },
    });
    const batch = await waitForEnd(alice(), created.id);
    expect(batch.status).toBe('completed');
    expect(sent('line')).toBe(100);
    expect(batch.request_counts).toEqual({ total: 1000, completed: 1000, failed: 0 });
    expect(batch.metadata).toEqual({ fusillade_coalesce: 'true' });

    const out = lines(await (await alice().files.content(batch.output_file_id!)).text());
    expect(out).toHaveLength(1000);
    expect(out.map((l) => l.custom_id).sort()).toEqual(
      Array.from({ length: 1000 }, (_, i) => `line-${i}`).sort(),
    );
    // Each line keeps its own request id; the lines of one body share the one answer.
    expect(new Set(out.map((l) => l.id)).size).toBe(1000);
    const answers = new Map<number, Set<string>>();
    for (const l of out) {
      expect(l.response.status_code).toBe(200);
      const q = Number(l.custom_id.slice('line-'.length)) % 100;
      const set = answers.get(q) ?? new Set();
      set.add(JSON.stringify(l.response.body));
      answers.set(q, set);
    }
    expect([...answers.values()].every((s) => s.size === 1)).toBe(true);
    expect(new Set(out.map((l) => l.response.body.id)).size).toBe(100);
    // Usage counts what was sent: 100 answers, not 1,000.
    const perAnswer = out[0]!.response.body.usage.total_tokens;
    expect(batch.usage?.total_tokens).toBe(100 * perAnswer);
  }, 1_300_000);

  it('without the flag every line is sent; a bad flag is a 400', async () => {
    mock.reset();
    const file = await upload(alice(), input('plain', 20, 5));
    const created = await alice().batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { fusillade_coalesce: 'false' },
    });
    const batch = await waitForEnd(alice(), created.id);
    expect(batch.request_counts).toEqual({ total: 20, completed: 20, failed: 0 });
    expect(sent('plain')).toBe(20);

    const err = await alice()
      .batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { fusillade_coalesce: 'yes' },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('metadata');
  }, 1_300_000);

  it("a leader's failure is copied to its followers, each in the error file under its own custom_id", async () => {
    mock.reset();
    mock.setBehaviour((req) =>
      req.body.includes('refuse me')
        ? {
            kind: 'status',
            status: 400,
            body: { error: { message: 'no thanks', type: 'invalid_request_error' } },
          }
        : { kind: 'ok' },
    );
    try {
      const file = await upload(
        alice(),
        input('fail', 30, 3, (q) => (q === 0 ? 'refuse me' : `question ${q}`)),
      );
      const created = await alice().batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { fusillade_coalesce: 'true' },
      });
      const batch = await waitForEnd(alice(), created.id);
      expect(sent('fail')).toBe(3);
      expect(batch.request_counts).toEqual({ total: 30, completed: 20, failed: 10 });
      const errors = lines(await (await alice().files.content(batch.error_file_id!)).text());
      expect(errors.map((l) => l.custom_id).sort()).toEqual(
        Array.from({ length: 10 }, (_, i) => `fail-${i * 3}`).sort(),
      );
      for (const l of errors) expect(l.response.status_code).toBe(400);
    } finally {
      mock.setBehaviour(null);
    }
  }, 1_300_000);
});
