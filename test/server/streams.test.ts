import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { jsonl, startTestServer, type TestServer, upload, usageOfOutput } from './support.js';

/**
 * Lines that ask for `"stream": true` through the official openai client: the daemon sends them as
 * streams and the output file holds the one JSON object the same call returns without streaming,
 * usage included; a stream cut midway, or ended before its last event, is retried.
 */

let mock: MockUpstream;
let t: TestServer;
beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 3, logger: () => {} },
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

type Endpoint = OpenAI.Batches.BatchCreateParams['endpoint'];

const bodies: Record<string, (i: number) => Record<string, unknown>> = {
  '/v1/chat/completions': (i) => ({
    model: 'gpt-4o-mini',
    stream: true,
    messages: [{ role: 'user', content: `hi ${i}` }],
  }),
  '/v1/responses': (i) => ({ model: 'gpt-4.1-mini', stream: true, input: `say ${i}` }),
  '/v1/completions': (i) => ({ model: 'gpt-3.5-turbo-instruct', stream: true, prompt: `once ${i}` }),
};

async function waitFor(id: string): Promise<OpenAI.Batches.Batch> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const batch = await t.alice.batches.retrieve(id);
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

describe('streamed lines', () => {
  for (const endpoint of Object.keys(bodies) as Endpoint[]) {
    it(`${endpoint}: the output holds the whole answer, usage included, even after broken streams`, async () => {
      const n = 6;
      const prefix = `s${endpoint.replaceAll('/', '-')}-`;
      // Line 0's first attempt is cut mid-stream, line 1's ends cleanly before its last events.
      mock.setBehaviour((req) => {
        if (req.customId === `${prefix}0` && req.attemptNo === 1) return { kind: 'stream-break', how: 'cut' };
        if (req.customId === `${prefix}1` && req.attemptNo === 1)
          return { kind: 'stream-break', how: 'truncate' };
        return { kind: 'ok' };
      });
      const input = Array.from({ length: n }, (_, i) => ({
        custom_id: `${prefix}${i}`,
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
      const batch = await waitFor(created.id);
      expect(batch.status).toBe('completed');
      expect(batch.request_counts).toEqual({ total: n, completed: n, failed: 0 });

      const raw = await (await t.alice.files.content(batch.output_file_id!)).text();
      expect(raw).not.toContain('data:');
      const out = parseLines(raw);
      expect(out).toHaveLength(n);
      for (const line of out) {
        const body = line.response.body;
        expect(typeof body).toBe('object');
        if (endpoint === '/v1/chat/completions') {
          const c = body as OpenAI.Chat.ChatCompletion;
          expect(c.object).toBe('chat.completion');
          expect(c.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'mock reply' });
          expect(c.choices[0]!.finish_reason).toBe('stop');
        } else if (endpoint === '/v1/completions') {
          const c = body as OpenAI.Completions.Completion;
          expect(c.object).toBe('text_completion');
          expect(c.choices[0]!.text).toBe('mock completion');
        } else {
          const r = body as OpenAI.Responses.Response;
          expect(r).toMatchObject({ object: 'response', status: 'completed' });
          expect(r.output[0]).toMatchObject({ type: 'message' });
        }
        expect(body.usage).toBeTruthy();
      }
      // The broken streams were sent again; usage was asked for on chat and completions streams.
      const sent = mock.requests.filter((r) => r.customId?.startsWith(prefix));
      expect(mock.countsByCustomId.get(`${prefix}0`)).toBe(2);
      expect(mock.countsByCustomId.get(`${prefix}1`)).toBe(2);
      expect(sent).toHaveLength(n + 2);
      for (const r of sent) {
        const body = JSON.parse(r.body!);
        expect(body.stream).toBe(true);
        if (endpoint !== '/v1/responses') expect(body.stream_options).toEqual({ include_usage: true });
      }
      const expected = usageOfOutput(out);
      expect(expected.total).toBeGreaterThan(0);
      expect(batch.usage).toMatchObject({
        input_tokens: expected.input,
        output_tokens: expected.output,
        total_tokens: expected.total,
      });
      mock.setBehaviour(null);
    });
  }

  it('reassembles an Anthropic messages stream sent from the library', async () => {
    const m = t.server.manager;
    const fileId = await m.createFile('anthropic.jsonl', null, [
      {
        endpoint: mock.url,
        method: 'POST',
        path: '/v1/messages',
        body: JSON.stringify({ model: 'claude-test', max_tokens: 64, stream: true, messages: [] }),
        model: 'claude-test',
        apiKey: '',
        customId: 'anthropic-0',
      },
    ]);
    const batchId = await m.createBatch(fileId);
    const deadline = Date.now() + 60_000;
    while ((await m.getBatchStatus(batchId)).finishedAt === null) {
      if (Date.now() > deadline) throw new Error('the batch did not end');
      await new Promise((r) => setTimeout(r, 50));
    }
    const [request] = await m.getBatchRequests(batchId);
    expect(request!.state).toBe('completed');
    const body = JSON.parse((request as { responseBody: string }).responseBody);
    expect(body).toMatchObject({
      type: 'message',
      role: 'assistant',
      content: [{ type: 'text', text: 'mock message' }],
      stop_reason: 'end_turn',
      usage: {
        input_tokens: 7,
        cache_read_input_tokens: 3,
        cache_creation_input_tokens: 1,
        output_tokens: 5,
      },
    });
  });

  it('keeps a line that sets include_usage false as it is, and still completes it', async () => {
    const line = {
      custom_id: 'no-usage',
      method: 'POST',
      url: '/v1/chat/completions',
      body: { ...bodies['/v1/chat/completions']!(0), stream_options: { include_usage: false } },
    };
    const file = await upload(t.alice, jsonl([line]));
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const batch = await waitFor(created.id);
    expect(batch.request_counts).toEqual({ total: 1, completed: 1, failed: 0 });
    const [out] = parseLines(await (await t.alice.files.content(batch.output_file_id!)).text());
    expect(out.response.body).toMatchObject({
      object: 'chat.completion',
      choices: [{ message: { content: 'mock reply' } }],
    });
    expect(out.response.body.usage).toBeUndefined();
    expect(JSON.parse(mock.requests.find((r) => r.customId === 'no-usage')!.body!).stream_options).toEqual({
      include_usage: false,
    });
  });
});
