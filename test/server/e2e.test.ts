import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { waitFor as waitForCondition } from '../support/mock-upstream.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from './support.js';

/** The whole path with the real daemon in-process and the mock upstream, driven by the openai client. */

const UPSTREAM_KEY = 'sk-upstream-secret-e2e-0123456789';
let mock: MockUpstream;
let t: TestServer;
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1/`, upstreamApiKey: UPSTREAM_KEY },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 1 },
    logger: (entry) => logs.push(entry),
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

async function waitFor(
  client: OpenAI,
  id: string,
  done: (b: OpenAI.Batches.Batch) => boolean,
): Promise<OpenAI.Batches.Batch> {
  // A deadline against a hang, not a speed check: a loaded machine takes what it takes.
  const deadline = Date.now() + 120_000;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (done(batch)) return batch;
    if (Date.now() > deadline) throw new Error(`batch ${id} is still ${batch.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const lines = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('end to end with the daemon', () => {
  it('uploads, runs to completed, and serves output and error files without leaking the upstream key', async () => {
    // hello 3 gets a final 400 from the upstream; everything else succeeds.
    mock.setBehaviour((req) =>
      req.body.includes('"hello 3"')
        ? {
            kind: 'status',
            status: 400,
            body: { error: { message: 'no thanks', type: 'invalid_request_error' } },
          }
        : { kind: 'ok' },
    );
    const file = await upload(t.alice, jsonl(Array.from({ length: 20 }, (_, i) => chatLine(i + 1))));
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const batch = await waitFor(t.alice, created.id, (b) => b.status === 'completed');
    expect(batch.request_counts).toEqual({ total: 20, completed: 19, failed: 1 });
    expect(batch.usage?.total_tokens).toBeGreaterThan(0);

    const out = lines(await (await t.alice.files.content(batch.output_file_id!)).text());
    expect(out).toHaveLength(19);
    expect(out.map((l) => l.custom_id).sort()).toEqual(
      Array.from({ length: 20 }, (_, i) => `req-${i + 1}`)
        .filter((id) => id !== 'req-3')
        .sort(),
    );
    expect(out[0]).toMatchObject({
      response: { status_code: 200, body: { object: 'chat.completion' } },
      error: null,
    });

    const errors = lines(await (await t.alice.files.content(batch.error_file_id!)).text());
    expect(errors).toEqual([
      expect.objectContaining({
        custom_id: 'req-3',
        response: expect.objectContaining({
          status_code: 400,
          body: { error: expect.objectContaining({ message: 'no thanks' }) },
        }),
        error: null,
      }),
    ]);

    // The upstream got the configured key; no answer, row or log carries it.
    const sent = mock.requests.filter((r) => r.path === '/v1/chat/completions');
    expect(sent.length).toBeGreaterThanOrEqual(20);
    expect(sent.every((r) => r.headers.authorization === `Bearer ${UPSTREAM_KEY}`)).toBe(true);
    const answers = JSON.stringify([
      batch,
      await t.alice.files.list(),
      await t.alice.batches.list(),
      out,
      errors,
      await (await fetch(`${t.server.url}/metrics`)).text(),
    ]);
    expect(answers).not.toContain(UPSTREAM_KEY);
    // The daemon's metrics share the server's registry.
    expect(answers).toContain('fusillade_requests_dispatched_total');
    expect(JSON.stringify(logs)).not.toContain(UPSTREAM_KEY);
    const keys = await t.db.pool.query(`SELECT DISTINCT api_key FROM ${t.s}.request_templates`);
    expect(keys.rows).toEqual([{ api_key: '' }]);
  });

  it('cancels a running batch: in-flight requests are aborted and everything unsent is in the error file', async () => {
    mock.setBehaviour(() => ({ kind: 'hang' }));
    const file = await upload(t.alice, jsonl(Array.from({ length: 30 }, (_, i) => chatLine(i + 1))));
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    // Waits for the condition (10 s here was a speed check: claiming the first rows of a new batch
    // can take longer on a loaded machine); it fails only if nothing is ever sent.
    await waitForCondition(() => mock.inFlight.total > 0);
    const cancelling = await t.alice.batches.cancel(created.id);
    expect(['cancelling', 'cancelled']).toContain(cancelling.status);
    const cancelled = await waitFor(t.alice, created.id, (b) => b.status === 'cancelled');
    expect(cancelled.request_counts).toEqual({ total: 30, completed: 0, failed: 30 });
    const errors = lines(await (await t.alice.files.content(cancelled.error_file_id!)).text());
    expect(errors).toHaveLength(30);
    expect(errors.every((l) => l.response === null && l.error.code === 'batch_cancelled')).toBe(true);
    mock.setBehaviour(null);
  });
});
