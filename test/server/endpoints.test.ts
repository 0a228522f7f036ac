import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { jsonl, startTestServer, type TestServer, upload, usageOfOutput } from './support.js';

/**
 * Every endpoint OpenAI batches accept, end to end through the official client: upload, create,
 * wait, output file, with the batch's usage equal to the sum of the output file's usage fields.
 */

let mock: MockUpstream;
let t: TestServer;
beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 2 },
    maxEmbeddingInputsPerFile: 20,
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

type Endpoint = OpenAI.Batches.BatchCreateParams['endpoint'];

const bodies: Record<string, (i: number) => Record<string, unknown>> = {
  '/v1/chat/completions': (i) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hi ${i}` }] }),
  '/v1/responses': (i) => ({ model: 'gpt-4.1-mini', input: `say ${i}` }),
  '/v1/embeddings': (i) => ({
    model: 'text-embedding-3-small',
    input: i % 2 === 0 ? `text ${i}` : [`a ${i}`, `b ${i}`],
  }),
  '/v1/completions': (i) => ({ model: 'gpt-3.5-turbo-instruct', prompt: `once upon ${i}` }),
  '/v1/moderations': (i) => ({ model: 'omni-moderation-latest', input: `is ${i} fine?` }),
};

/** What each endpoint's answers must look like in the output file. */
const shapes: Record<string, (body: Record<string, unknown>) => void> = {
  '/v1/chat/completions': (b) => {
    const c = b as unknown as OpenAI.Chat.ChatCompletion;
    expect(c.object).toBe('chat.completion');
    expect(c.choices[0]!.message.role).toBe('assistant');
  },
  '/v1/responses': (b) => {
    const r = b as unknown as OpenAI.Responses.Response;
    expect(r.object).toBe('response');
    expect(r.status).toBe('completed');
    expect(r.output[0]!.type).toBe('message');
  },
  '/v1/embeddings': (b) => {
    const e = b as unknown as OpenAI.Embeddings.CreateEmbeddingResponse;
    expect(e.object).toBe('list');
    expect(e.data[0]!.object).toBe('embedding');
    expect(e.data[0]!.embedding.length).toBeGreaterThan(0);
  },
  '/v1/completions': (b) => {
    const c = b as unknown as OpenAI.Completions.Completion;
    expect(c.object).toBe('text_completion');
    expect(typeof c.choices[0]!.text).toBe('string');
  },
  '/v1/moderations': (b) => {
    const m = b as unknown as OpenAI.Moderations.ModerationCreateResponse;
    expect(m.id).toMatch(/^modr-/);
    expect(m.results[0]!.flagged).toBe(false);
  },
};

async function waitFor(client: OpenAI, id: string): Promise<OpenAI.Batches.Batch> {
  // A deadline against a hang, not a speed check: a loaded machine takes what it takes.
  const deadline = Date.now() + 120_000;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (['completed', 'failed', 'cancelled', 'expired'].includes(batch.status)) return batch;
    if (Date.now() > deadline) throw new Error(`batch ${id} is still ${batch.status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const parseLines = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('every batch endpoint through the openai client', () => {
  for (const endpoint of Object.keys(bodies) as Endpoint[]) {
    it(`runs a ${endpoint} batch to completed with its output and usage`, async () => {
      const n = 6;
      const input = Array.from({ length: n }, (_, i) => ({
        custom_id: `${endpoint}-${i}`,
        method: 'POST',
        url: endpoint,
        body: bodies[endpoint]!(i),
      }));
      const file = await upload(t.alice, jsonl(input));
      const created = await t.alice.batches.create({
        input_file_id: file.id,
        endpoint,
        completion_window: '24h',
      });
      expect(created.endpoint).toBe(endpoint);
      const batch = await waitFor(t.alice, created.id);
      expect(batch.status).toBe('completed');
      expect(batch.request_counts).toEqual({ total: n, completed: n, failed: 0 });
      expect(batch.error_file_id).toBeNull();

      const out = parseLines(await (await t.alice.files.content(batch.output_file_id!)).text());
      expect(out.map((l) => l.custom_id).sort()).toEqual(input.map((l) => l.custom_id).sort());
      for (const line of out) {
        expect(line).toMatchObject({ id: expect.stringMatching(/^batch_req_/), error: null });
        expect(line.response.status_code).toBe(200);
        shapes[endpoint]!(line.response.body);
      }
      // What the upstream got: the endpoint's path and the line's body, byte for byte.
      const sent = mock.requests.filter((r) => r.customId?.startsWith(`${endpoint}-`));
      expect(new Set(sent.map((r) => r.path))).toEqual(new Set([endpoint]));
      expect(
        sent
          .map((r) => JSON.parse(r.body!))
          .sort((a, b) => (a.model + a.input).localeCompare(b.model + b.input)),
      ).toEqual(
        input
          .map((l) => l.body)
          .sort((a, b) => (String(a.model) + a.input).localeCompare(String(b.model) + b.input)),
      );

      const expected = usageOfOutput(out);
      expect(batch.usage).toMatchObject({
        input_tokens: expected.input,
        output_tokens: expected.output,
        total_tokens: expected.total,
      });
      if (endpoint !== '/v1/moderations') expect(expected.total).toBeGreaterThan(0);
    });
  }
});

describe("OpenAI's line checks", () => {
  async function apiError(p: Promise<unknown>) {
    const err = await p.then(
      () => undefined,
      (e) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    return err as InstanceType<typeof OpenAI.APIError> & { error: { line?: number } };
  }

  it("refuses a batch whose endpoint differs from the file's lines, naming the line", async () => {
    const lines = Array.from({ length: 3 }, (_, i) => ({
      custom_id: `e-${i}`,
      method: 'POST',
      url: '/v1/embeddings',
      body: bodies['/v1/embeddings']!(i),
    }));
    const file = await upload(t.alice, jsonl(lines));
    for (const endpoint of ['/v1/chat/completions', '/v1/responses', '/v1/moderations'] as Endpoint[]) {
      const err = await apiError(
        t.alice.batches.create({ input_file_id: file.id, endpoint, completion_window: '24h' }),
      );
      expect(err.status).toBe(400);
      expect(err.code).toBe('url_mismatch');
      expect(err.message).toMatch(/line 1/);
    }
  });

  it('counts embedding inputs across the file against the limit and names the line past it', async () => {
    // 20 allowed: lines of 1, 2, 1, 2, … inputs reach 21 on line 14.
    const lines = Array.from({ length: 16 }, (_, i) => ({
      custom_id: `e-${i}`,
      method: 'POST',
      url: '/v1/embeddings',
      body: bodies['/v1/embeddings']!(i),
    }));
    const err = await apiError(upload(t.alice, jsonl(lines)));
    expect(err.status).toBe(400);
    expect(err.code).toBe('too_many_embedding_inputs');
    expect(err.message).toMatch(/line 14\b/);
    // At the limit exactly, the file is accepted; lists of token ids count as one input each.
    const atLimit = [
      ...lines.slice(0, 13),
      { ...lines[13]!, body: { model: 'text-embedding-3-small', input: [1, 2, 3] } },
    ];
    await expect(upload(t.alice, jsonl(atLimit))).resolves.toMatchObject({ purpose: 'batch' });
    // Chat lines have no such count.
    const chat = Array.from({ length: 30 }, (_, i) => ({
      custom_id: `c-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: bodies['/v1/chat/completions']!(i),
    }));
    await expect(upload(t.alice, jsonl(chat))).resolves.toMatchObject({ purpose: 'batch' });
  });
});
