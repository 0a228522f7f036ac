import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonHandle } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
let daemon: DaemonHandle;
const QUOTA = JSON.stringify({
  error: { message: 'You exceeded your quota', type: 'insufficient_quota', code: 'insufficient_quota' },
});
const BAD = JSON.stringify({
  error: { message: 'Unsupported parameter: foo', type: 'invalid_request_error', code: null },
});

/** PostgreSQL text cannot hold U+0000: such a body must not poison the daemon's batched writes. */
const NUL_BODY = 'bad\u0000body';

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour((req): MockBehaviour => {
    const id = req.customId ?? '';
    if (id.startsWith('rl-') && req.attemptNo === 1)
      return { kind: 'status', status: 429, headers: { 'retry-after': '1' } };
    if (id.startsWith('rlms-') && req.attemptNo === 1)
      return { kind: 'status', status: 429, headers: { 'retry-after-ms': '400' } };
    if (id.startsWith('5xx-') && req.attemptNo <= 2)
      return { kind: 'status', status: req.attemptNo === 1 ? 500 : 503 };
    if (id.startsWith('quota-')) return { kind: 'status', status: 429, body: QUOTA };
    if (id.startsWith('bad-')) return { kind: 'status', status: 400, body: BAD };
    if (id.startsWith('nul400-')) return { kind: 'status', status: 400, body: NUL_BODY };
    if (id.startsWith('nul200-')) return { kind: 'status', status: 200, body: NUL_BODY };
    if (id.startsWith('reset-') && req.attemptNo === 1) return { kind: 'reset' };
    if (id.startsWith('hang-') && req.attemptNo === 1) return { kind: 'hang' };
    if (id.startsWith('html-') && req.attemptNo === 1) return { kind: 'not-json' };
    if (id.startsWith('always-')) return { kind: 'status', status: 502 };
    if (id.startsWith('slow5xx-')) return { kind: 'status', status: 500 };
    return { kind: 'ok' };
  });
  const m = db.manager({
    pollIntervalMs: 100,
    // Long enough that no ordinary answer times out on a loaded machine; the hang test waits it out.
    requestTimeoutMs: 2000,
    backoffMs: 20,
    maxBackoffMs: 50,
    maxRetries: 3,
    logger: () => {},
  });
  daemon = await m.run();
});
afterAll(async () => {
  await daemon.stop();
  await mock.close();
  await db.close();
});

async function runBatch(prefix: string, n = 3) {
  const m = db.manager();
  const batchId = await createBatch(m, mockTemplates(mock, n, { prefix }));
  const status = await waitForBatchEnd(m, batchId);
  const rows = await db.pool.query(
    `SELECT t.custom_id, r.state, r.attempt, r.response_status, r.response_body, r.error_code, r.error_message
       FROM ${m.schema}.requests r JOIN ${m.schema}.request_templates t ON t.id = r.template_id
      WHERE r.batch_id = $1 ORDER BY r.line_number`,
    [batchId],
  );
  return { batchId, status, rows: rows.rows };
}

describe('retries', () => {
  it('honours Retry-After on a 429 and then completes', async () => {
    const { rows, status } = await runBatch('rl-', 2);
    expect(status.completedRequests).toBe(2);
    for (const r of rows) expect(r).toMatchObject({ state: 'completed', attempt: 2, response_status: 200 });
    // The retry is due no sooner than Retry-After after the 429 reached the daemon, which is after
    // the first attempt arrived at the upstream: a lower bound that holds however slow the machine.
    const sent = mock.requests.filter((r) => r.customId === 'rl-0');
    expect(sent[1]!.receivedAt - sent[0]!.receivedAt).toBeGreaterThanOrEqual(1000);
    const ms = await runBatch('rlms-', 1);
    const sentMs = mock.requests.filter((r) => r.customId === 'rlms-0');
    expect(ms.rows[0].state).toBe('completed');
    expect(sentMs[1]!.receivedAt - sentMs[0]!.receivedAt).toBeGreaterThanOrEqual(400);
  });

  it('retries 5xx, resets, hangs (timeout) and non-JSON 200s', async () => {
    for (const prefix of ['5xx-', 'reset-', 'hang-', 'html-']) {
      const { rows, status } = await runBatch(prefix, 2);
      expect(status.completedRequests, prefix).toBe(2);
      for (const r of rows) expect(r.state, prefix).toBe('completed');
    }
    expect(mock.countsByCustomId.get('5xx-0')).toBe(3);
    expect(mock.countsByCustomId.get('hang-1')).toBe(2);
  });

  it('fails at once on insufficient_quota and on a 400, keeping the upstream status and body', async () => {
    const quota = await runBatch('quota-', 2);
    expect(quota.status).toMatchObject({ status: 'completed', failedRequests: 2, completedRequests: 0 });
    expect(quota.rows[0]).toMatchObject({
      state: 'failed',
      attempt: 1,
      response_status: 429,
      response_body: QUOTA,
    });
    const bad = await runBatch('bad-', 1);
    expect(bad.rows[0]).toMatchObject({
      state: 'failed',
      attempt: 1,
      response_status: 400,
      response_body: BAD,
    });
    expect(mock.countsByCustomId.get('bad-0')).toBe(1);
  });

  it('stores a body with a NUL character (as U+FFFD) instead of failing the write of every row with it', async () => {
    const m = db.manager();
    const batchId = await createBatch(m, [
      ...mockTemplates(mock, 2, { prefix: 'nul400-' }),
      ...mockTemplates(mock, 1, { prefix: 'nul200-' }),
      ...mockTemplates(mock, 3, { prefix: 'fine-' }),
    ]);
    const status = await waitForBatchEnd(m, batchId);
    expect(status).toMatchObject({ completedRequests: 3, failedRequests: 3 });
    const { rows } = await db.pool.query(
      `SELECT response_status, response_body, error_code FROM ${m.schema}.requests
        WHERE batch_id = $1 AND state = 'failed' ORDER BY line_number`,
      [batchId],
    );
    expect(rows.map((r) => r.response_body)).toEqual(Array(3).fill('bad\ufffdbody'));
    expect(rows[2]).toMatchObject({ response_status: 200, error_code: 'invalid_response' });
  });

  it('fails after the retries are spent, and not before', async () => {
    const { rows } = await runBatch('always-', 1);
    expect(rows[0]).toMatchObject({ state: 'failed', attempt: 4, response_status: 502 });
    expect(mock.countsByCustomId.get('always-0')).toBe(4);
  });

  it('shows a request as pending with its last error while retries remain', async () => {
    const m = db.manager();
    // Long backoffs for this batch only: a second daemon would see the same rows, so use a hint.
    mock.setBehaviour((req) =>
      req.customId === 'wait-0' && req.attemptNo === 1
        ? { kind: 'status', status: 503, headers: { 'retry-after': '2' } }
        : { kind: 'ok' },
    );
    const batchId = await createBatch(m, mockTemplates(mock, 1, { prefix: 'wait-' }));
    const record = await waitFor(async () => {
      const [r] = await m.getBatchRequests(batchId);
      return r && r.state === 'pending' && r.attempt === 1 ? r : null;
    });
    expect(record).toMatchObject({ state: 'pending', lastError: { code: 'http_503' } });
    // Retry-After 2 s counts from the answer, which came after the attempt arrived at the upstream.
    const first = mock.requests.find((r) => r.customId === 'wait-0' && r.attemptNo === 1)!;
    expect(record.state === 'pending' && record.notBefore!.getTime()).toBeGreaterThanOrEqual(
      first.receivedAt + 2000,
    );
    const status = await m.getBatchStatus(batchId);
    expect(status.failedRequests).toBe(0);
    const end = await waitForBatchEnd(m, batchId);
    expect(end.completedRequests).toBe(1);
  });
});
