import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, memoryLogger, mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

describe('dispatch', () => {
  it('sends every request with the right URL and headers and stores answers, ids and usage', async () => {
    const log = memoryLogger();
    const registry = new Registry();
    const m = db.manager({ pollIntervalMs: 200, logger: log.logger, metricsRegistry: registry });
    const daemon = await m.run();
    try {
      const templates = [
        ...mockTemplates(mock, 20, { apiKey: 'sk-secret-abc' }),
        ...mockTemplates(mock, 5, { model: 'emb', prefix: 'e-', path: '/v1/embeddings' }),
      ];
      templates[0]!.endpoint = `${mock.url}/v1/`; // a base URL given with /v1 is normalised
      const batchId = await createBatch(m, templates);
      const status = await waitForBatchEnd(m, batchId);
      expect(status).toMatchObject({ status: 'completed', completedRequests: 25, failedRequests: 0 });
      expect(status.usage.inputTokens).toBe(20 * 10 + 5 * 8);
      expect(status.usage.outputTokens).toBe(20 * 2);

      const sent = mock.requests.filter((r) => r.customId === 'req-0');
      expect(sent).toHaveLength(1);
      expect(sent[0]!.path).toBe('/v1/chat/completions');
      expect(sent[0]!.headers.authorization).toBe('Bearer sk-secret-abc');
      expect(sent[0]!.headers['content-type']).toBe('application/json');
      expect(sent[0]!.body).toBe(templates[0]!.body);
      const rows = await m.getBatchRequests(batchId);
      const first = rows.find((r) => r.customId === 'req-0')!;
      expect(sent[0]!.headers['x-fusillade-request-id']).toBe(first.id);
      expect(first.state).toBe('completed');
      const raw = await db.pool.query(
        `SELECT response_status, upstream_request_id, input_tokens, output_tokens, total_tokens, response_body
           FROM ${m.schema}.requests WHERE id = $1`,
        [first.id],
      );
      expect(raw.rows[0]).toMatchObject({
        response_status: 200,
        input_tokens: 10,
        output_tokens: 2,
        total_tokens: 12,
      });
      expect(raw.rows[0].upstream_request_id).toMatch(/^req_mock_/);
      expect(JSON.parse(raw.rows[0].response_body).object).toBe('chat.completion');
      expect(mock.requests.filter((r) => r.path === '/v1/embeddings')).toHaveLength(5);

      const metrics = await registry.metrics();
      expect(metrics).toMatch(/fusillade_requests_dispatched_total\{model="gpt-mock"\} 20/);
      expect(metrics).toMatch(/fusillade_requests_completed_total\{model="emb"\} 5/);
      expect(metrics).toContain('fusillade_claim_duration_seconds_bucket');
      expect(JSON.stringify(log.entries)).not.toContain('sk-secret-abc');
      expect(JSON.stringify(log.entries)).not.toContain('sk-upstream-secret');
    } finally {
      await daemon.stop();
    }
    const row = await db.pool.query(`SELECT stopped_at FROM ${db.schema}.daemons WHERE id = $1`, [daemon.id]);
    expect(row.rows[0].stopped_at).not.toBeNull();
  });

  it('routes by model at dispatch time (endpoint with /v1 normalised, key replaced); a bad endpoint fails at once', async () => {
    const log = memoryLogger();
    const m = db.manager({
      pollIntervalMs: 200,
      logger: log.logger,
      upstreamRouter: {
        route: (model) =>
          model === 'routed'
            ? { endpoint: `${mock.url}/v1/`, apiKey: 'sk-routed-key' }
            : model === 'broken'
              ? { endpoint: 'not a url', apiKey: 'sk-x' }
              : undefined,
      },
    });
    const daemon = await m.run();
    try {
      const templates = [
        ...mockTemplates(mock, 2, { model: 'routed', prefix: 'rt-', apiKey: '' }).map((t) => ({
          ...t,
          endpoint: 'http://127.0.0.1:9',
        })),
        ...mockTemplates(mock, 1, { model: 'broken', prefix: 'br-' }),
      ];
      const batchId = await createBatch(m, templates);
      const status = await waitForBatchEnd(m, batchId);
      expect(status).toMatchObject({ completedRequests: 2, failedRequests: 1 });
      const sent = mock.requests.filter((r) => r.customId?.startsWith('rt-'));
      expect(sent).toHaveLength(2);
      expect(sent[0]!.headers.authorization).toBe('Bearer sk-routed-key');
      expect(mock.requests.some((r) => r.customId === 'br-0')).toBe(false);
      const [broken] = await m.getBatchRequests(batchId, { search: 'br-' });
      expect(broken).toMatchObject({ state: 'failed', attempt: 1 });
      const raw = await db.pool.query(`SELECT error_code FROM ${m.schema}.requests WHERE id = $1`, [
        broken!.id,
      ]);
      expect(raw.rows[0].error_code).toBe('invalid_endpoint');
      expect(JSON.stringify(log.entries)).not.toContain('sk-routed-key');
      const stored = await db.pool.query(`SELECT config::text AS c FROM ${m.schema}.daemons WHERE id = $1`, [
        daemon.id,
      ]);
      expect(stored.rows[0].c).not.toContain('sk-');
    } finally {
      await daemon.stop();
    }
  });
});
