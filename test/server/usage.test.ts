import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import {
  jsonl,
  startTestServer,
  type TestServer,
  upload,
  usageObjectOf,
  usageOfOutput,
  uuidOf,
} from './support.js';

/**
 * Batch usage through the official openai client: it equals the sum of the output file's usage
 * fields exactly (cached and reasoning details included), per model too, after retries (the mock
 * fails first attempts, cuts a stream), after a cancel, and after retryFailedRequests reopens a
 * batch; the cost follows the server's price table.
 */

const PRICES = {
  'gpt-priced': { input: 2.5, cachedInput: 1.25, output: 10 },
};

let mock: MockUpstream;
let t: TestServer;
beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 3, logger: () => {} },
    modelPrices: PRICES,
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

const FINAL = ['completed', 'failed', 'cancelled', 'expired'];

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`waited too long for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ended = (id: string) =>
  until(`batch ${id} to end`, async () => {
    const b = await t.alice.batches.retrieve(id);
    return FINAL.includes(b.status) ? b : undefined;
  });

type Line = { custom_id: string; response: { body: { model: string; usage?: Record<string, unknown> } } };

async function outputOf(batch: OpenAI.Batches.Batch): Promise<Line[]> {
  if (!batch.output_file_id) return [];
  const text = await (await t.alice.files.content(batch.output_file_id)).text();
  return text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));
}

/** Batch fields fusillade adds beside OpenAI's. */
type Extra = {
  model_usage: (ReturnType<typeof usageObjectOf> & { model: string; cost: number | null })[];
  cost: number | null;
};

function expectUsageOfOutput(batch: OpenAI.Batches.Batch, out: Line[]): void {
  const b = batch as OpenAI.Batches.Batch & Extra;
  expect(b.usage).toEqual(usageObjectOf(out));
  // Per model: each model's lines sum to its entry; models without completed lines read zero.
  for (const m of b.model_usage) {
    const { cost: _cost, model, ...usage } = m;
    expect(usage).toEqual(usageObjectOf(out.filter((l) => l.response.body.model === model)));
  }
  const models = new Set(out.map((l) => l.response.body.model));
  for (const model of models) expect(b.model_usage.map((m) => m.model)).toContain(model);
}

function chat(prefix: string, i: number, model: string, extra: Record<string, unknown> = {}) {
  return {
    custom_id: `${prefix}${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content: `hi ${i}` }], ...extra },
  };
}

async function submit(lines: unknown[]): Promise<OpenAI.Batches.Batch> {
  const file = await upload(t.alice, jsonl(lines));
  return t.alice.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
}

describe('batch usage', () => {
  it('equals the output file exactly through retries, streams and a final failure, with its cost', async () => {
    const prefix = 'retry-';
    // Every third line fails its first attempt (500, then a cut stream for streamed lines); line 4
    // fails for good (400): its answer has no usage and it is not in the output file.
    mock.setBehaviour((req) => {
      if (!req.customId?.startsWith(prefix)) return { kind: 'ok' };
      const i = Number(req.customId.slice(prefix.length));
      if (i === 4) return { kind: 'status', status: 400, body: { error: { message: 'bad line' } } };
      if (i % 3 === 0 && req.attemptNo === 1) {
        return i % 2 === 0 ? { kind: 'stream-break', how: 'cut' } : { kind: 'status', status: 500 };
      }
      return { kind: 'ok' };
    });
    const lines = Array.from({ length: 12 }, (_, i) =>
      chat(prefix, i, i % 2 === 0 ? 'gpt-priced' : 'gpt-unpriced', i % 4 === 0 ? { stream: true } : {}),
    );
    const batch = await ended((await submit(lines)).id);
    mock.setBehaviour(null);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 12, completed: 11, failed: 1 });
    // The retried lines were sent twice; their first attempts count nothing.
    for (const i of [0, 3, 6, 9]) expect(mock.countsByCustomId.get(`${prefix}${i}`)).toBe(2);

    const out = await outputOf(batch);
    expect(out).toHaveLength(11);
    expectUsageOfOutput(batch, out);
    const sum = usageOfOutput(out);
    expect(sum.cached).toBeGreaterThan(0);
    expect(sum.reasoning).toBeGreaterThan(0);

    // Cost: the priced model's tokens at its prices, per million; the other model has none.
    const b = batch as OpenAI.Batches.Batch & Extra;
    const priced = usageOfOutput(out.filter((l) => l.response.body.model === 'gpt-priced'));
    const p = PRICES['gpt-priced'];
    const cost =
      ((priced.input - priced.cached) * p.input + priced.cached * p.cachedInput + priced.output * p.output) /
      1e6;
    expect(b.cost).toBeCloseTo(cost, 12);
    expect(b.model_usage.find((m) => m.model === 'gpt-priced')!.cost).toBeCloseTo(cost, 12);
    expect(b.model_usage.find((m) => m.model === 'gpt-unpriced')!.cost).toBeNull();

    // The list reads the same frozen sums.
    const listed = (await t.alice.batches.list({ limit: 20 })).data.find((x) => x.id === batch.id)!;
    expect(listed.usage).toEqual(batch.usage);
    expect((listed as OpenAI.Batches.Batch & Extra).cost).toBe(b.cost);
  });

  it('equals the output file after a cancel: the cancelled lines count nothing', async () => {
    const prefix = 'cancel-';
    mock.setBehaviour((req) => {
      if (!req.customId?.startsWith(prefix)) return { kind: 'ok' };
      return Number(req.customId.slice(prefix.length)) < 4 ? { kind: 'ok' } : { kind: 'hang' };
    });
    const lines = Array.from({ length: 10 }, (_, i) => chat(prefix, i, 'gpt-priced'));
    const created = await submit(lines);
    // Four answered, and at least one hanging in flight when the cancel comes.
    await until('four completed and one in flight', async () => {
      const b = await t.alice.batches.retrieve(created.id);
      return b.request_counts!.completed >= 4 && mock.inFlight.total > 0 ? b : undefined;
    });
    const live = (await t.alice.batches.retrieve(created.id)) as OpenAI.Batches.Batch & Extra;
    expect(live.usage!.total_tokens).toBeGreaterThan(0);
    await t.alice.batches.cancel(created.id);
    const batch = await ended(created.id);
    mock.setBehaviour(null);
    expect(batch.status).toBe('cancelled');
    const out = await outputOf(batch);
    expect(out.map((l) => l.custom_id).sort()).toEqual([0, 1, 2, 3].map((i) => `${prefix}${i}`));
    expectUsageOfOutput(batch, out);
    expect(batch.usage!.total_tokens).toBeGreaterThan(0);
  });

  it('equals the output file again after retryFailedRequests reopens the batch', async () => {
    const prefix = 'reopen-';
    let failing = true;
    mock.setBehaviour((req) =>
      failing && req.customId === `${prefix}2`
        ? { kind: 'status', status: 400, body: { error: { message: 'not yet' } } }
        : { kind: 'ok' },
    );
    const lines = Array.from({ length: 5 }, (_, i) => chat(prefix, i, 'gpt-priced'));
    const first = await ended((await submit(lines)).id);
    expect(first.request_counts).toEqual({ total: 5, completed: 4, failed: 1 });
    expectUsageOfOutput(first, await outputOf(first));

    failing = false;
    expect(await t.server.manager.retryFailedRequests(uuidOf(first.id))).toBe(1);
    const second = await until('the reopened batch to end again', async () => {
      const b = await t.alice.batches.retrieve(first.id);
      return b.request_counts!.completed === 5 && FINAL.includes(b.status) ? b : undefined;
    });
    mock.setBehaviour(null);
    const out = await outputOf(second);
    expect(out).toHaveLength(5);
    expectUsageOfOutput(second, out);
    expect(second.usage!.total_tokens).toBe((first.usage!.total_tokens / 4) * 5);
  });
});
