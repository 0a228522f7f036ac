import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDACTED_KEY } from '../../src/domain/redact-keys.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * Issue 17 finding 5: tenant data escaping isolation. /metrics (open by default) named every model
 * any owner had used, one set of series per name; an upstream error repeating the request's
 * Authorization header was stored verbatim and served to the tenant in the error file.
 */

const UPSTREAM_KEY = 'sk-routing-key-tenant-leaks-0123456789';
const CONFIGURED = 'configured-model';
const TENANT_MODELS = 60;
let mock: MockUpstream;
let t: TestServer;

beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: {
      upstream: `${mock.url}/v1/`,
      upstreamApiKey: UPSTREAM_KEY,
      models: { [CONFIGURED]: { limit: 8 } },
    },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 0 },
  });
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

async function runBatch(client: OpenAI, lines: unknown[]): Promise<OpenAI.Batches.Batch> {
  const file = await upload(client, jsonl(lines));
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  return waitFor(async () => {
    const b = await client.batches.retrieve(created.id);
    return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : null;
  });
}

const scrape = async () => (await fetch(`${t.server.url}/metrics`)).text();

describe('/metrics names no tenant model', () => {
  it(`${TENANT_MODELS} models outside the configuration add up under model="(other)"`, async () => {
    const names = Array.from({ length: TENANT_MODELS }, (_, i) => `ft:alice-private-${i}`);
    const lines = [
      ...names.map((model, i) =>
        chatLine(i, { body: { model, messages: [{ role: 'user', content: 'hi' }] } }),
      ),
      chatLine(TENANT_MODELS, { body: { model: CONFIGURED, messages: [{ role: 'user', content: 'hi' }] } }),
    ];
    const batch = await runBatch(t.alice, lines);
    expect(batch.request_counts).toMatchObject({ completed: TENANT_MODELS + 1, failed: 0 });

    const text = await scrape();
    for (const name of names) expect(text).not.toContain(name);
    expect(text).not.toContain('alice-private');
    // The configured model keeps its own series; the others share one.
    expect(text).toContain(`fusillade_requests_completed_total{model="${CONFIGURED}"} 1`);
    expect(text).toContain(`fusillade_requests_completed_total{model="(other)"} ${TENANT_MODELS}`);
    const completedSeries = text
      .split('\n')
      .filter((l) => l.startsWith('fusillade_requests_completed_total{'));
    expect(completedSeries).toHaveLength(2);
    // Per-model settings show the configured model only.
    const limitSeries = text.split('\n').filter((l) => l.startsWith('fusillade_model_concurrency_limit{'));
    expect(limitSeries).toEqual([`fusillade_model_concurrency_limit{model="${CONFIGURED}"} 8`]);
    const series = text.split('\n').filter((l) => l && !l.startsWith('#')).length;
    console.log(
      `hostile tenants: ${TENANT_MODELS + 1} models used, /metrics ${series} series, ${text.length} bytes`,
    );
  });
});

describe('upstream keys are redacted from stored answers', () => {
  it('an error repeating the Authorization header reaches the error file without the key', async () => {
    mock.setBehaviour((req) => {
      const auth = String(req.headers.authorization);
      if (req.body.includes('"echo-error"')) {
        return {
          kind: 'status',
          status: 401,
          body: {
            error: {
              message: `Incorrect API key provided: ${auth}. You can find your API key at https://example/keys?k=${encodeURIComponent(auth.slice(7))}.`,
              type: 'invalid_request_error',
              code: 'invalid_api_key',
            },
          },
        };
      }
      if (req.body.includes('"echo-ok"')) {
        return {
          kind: 'status',
          status: 200,
          body: { object: 'chat.completion', echoed: auth, choices: [] },
        };
      }
      return { kind: 'ok' };
    });
    try {
      const batch = await runBatch(t.alice, [
        chatLine(1, { body: { model: CONFIGURED, messages: [{ role: 'user', content: 'echo-error' }] } }),
        chatLine(2, { body: { model: CONFIGURED, messages: [{ role: 'user', content: 'echo-ok' }] } }),
      ]);
      expect(batch.request_counts).toMatchObject({ completed: 1, failed: 1 });
      // The upstream did get the key (and repeated it).
      expect(mock.requests.some((r) => r.headers.authorization === `Bearer ${UPSTREAM_KEY}`)).toBe(true);

      const errors = await (await t.alice.files.content(batch.error_file_id!)).text();
      const output = await (await t.alice.files.content(batch.output_file_id!)).text();
      expect(errors).toContain('Incorrect API key provided: Bearer [redacted upstream key]');
      expect(errors).toContain(`keys?k=${REDACTED_KEY}.`);
      expect(output).toContain(`"echoed":"Bearer ${REDACTED_KEY}"`);
      const rows = await t.db.pool.query(
        `SELECT response_body, error_message FROM ${t.s}.requests WHERE response_body LIKE '%redacted%'`,
      );
      expect(rows.rowCount).toBe(2);
      const stored = JSON.stringify(rows.rows);
      for (const text of [errors, output, stored, JSON.stringify(await t.alice.batches.retrieve(batch.id))]) {
        expect(text).not.toContain(UPSTREAM_KEY);
        expect(text).not.toContain(encodeURIComponent(UPSTREAM_KEY).slice(0, 20));
      }
    } finally {
      mock.setBehaviour(null);
    }
  });
});
