import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSettings } from '../../src/config/settings.js';
import { settleAttempt } from '../../src/daemon/settle.js';
import { ValidationError } from '../../src/domain/errors.js';
import {
  type AttemptOutcome,
  classifyOutcome,
  DEFAULT_RETRY_RULES,
  resolveRetryableStatuses,
  upstreamErrorMessage,
} from '../../src/domain/retry.js';
import type { ManagerConfig } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, memoryLogger, mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

const http = (status: number, body = '{}'): AttemptOutcome => ({
  kind: 'http',
  status,
  body,
  upstreamRequestId: null,
  retryAfterMs: null,
});
const OPENAI_400 = JSON.stringify({
  error: { message: "Unsupported value: 'temperature' does not support 7", type: 'invalid_request_error' },
});
const ANTHROPIC_400 = JSON.stringify({
  type: 'error',
  error: { type: 'invalid_request_error', message: 'max_tokens: field required' },
});

describe('the upstream message of a failed answer', () => {
  it("takes the error envelope's message (OpenAI, Anthropic, common variants), else status text and body", () => {
    expect(upstreamErrorMessage(400, OPENAI_400)).toBe("Unsupported value: 'temperature' does not support 7");
    expect(upstreamErrorMessage(400, ANTHROPIC_400)).toBe('max_tokens: field required');
    expect(upstreamErrorMessage(422, '{"detail":"model not found"}')).toBe('model not found');
    expect(upstreamErrorMessage(400, '{"object":"error","message":"bad prompt"}')).toBe('bad prompt');
    expect(upstreamErrorMessage(403, '{"error":"forbidden here"}')).toBe('forbidden here');
    expect(upstreamErrorMessage(502, '<html>\n<body>Bad gateway</body></html>')).toBe(
      '502 Bad Gateway: <html> <body>Bad gateway</body></html>',
    );
    expect(upstreamErrorMessage(404, '')).toBe('404 Not Found');
    expect(upstreamErrorMessage(400, '{"error":{"code":"x"}}')).toBe(
      '400 Bad Request: {"error":{"code":"x"}}',
    );
    expect(upstreamErrorMessage(500, 'x'.repeat(5000)).length).toBeLessThan(400);
  });
});

describe('retry rules as configuration', () => {
  it('a status list replaces the defaults; add and remove edit them', () => {
    expect([...resolveRetryableStatuses(undefined)].sort()).toEqual(
      [408, 429, 500, 502, 503, 504, 529].sort(),
    );
    expect([...resolveRetryableStatuses([503])]).toEqual([503]);
    const edited = resolveRetryableStatuses({ add: [404, 499], remove: [500] });
    expect(edited.has(404) && edited.has(499) && edited.has(502)).toBe(true);
    expect(edited.has(500)).toBe(false);
    expect(() => resolveRetryableStatuses([42])).toThrow(/HTTP statuses/);
    const rules = { retryableStatuses: resolveRetryableStatuses({ add: [404] }) };
    expect(classifyOutcome(http(404), rules)).toBe('retriable');
    expect(classifyOutcome(http(404))).toBe('final');
  });

  it('shouldRetry overrules the statuses; undefined leaves them; a throwing hook is ignored', () => {
    const rules = {
      ...DEFAULT_RETRY_RULES,
      shouldRetry: (o: AttemptOutcome) => {
        if (o.kind !== 'http') return undefined;
        if (o.status === 200 && o.body.includes('"error"')) return true;
        if (o.status === 503) return false;
        return undefined;
      },
    };
    expect(classifyOutcome(http(200, '{"error":"busy"}'), rules)).toBe('retriable');
    expect(classifyOutcome(http(503), rules)).toBe('final');
    expect(classifyOutcome(http(500), rules)).toBe('retriable');
    expect(classifyOutcome(http(400), rules)).toBe('final');
    const row = { id: 'r', batchId: 'b', model: 'm', attempt: 1, deadline: Number.POSITIVE_INFINITY };
    const policy = { maxRetries: 3, backoffMs: 10, backoffFactor: 2, maxBackoffMs: 100 };
    const errors: unknown[] = [];
    const throwing = {
      ...policy,
      ...DEFAULT_RETRY_RULES,
      shouldRetry: () => {
        throw new Error('hook bug');
      },
    };
    const w = settleAttempt({ ...row, onHookError: (e) => errors.push(e) }, http(503), null, throwing);
    expect(w).toMatchObject({ state: 'pending', errorCode: 'http_503' });
    expect(errors).toHaveLength(1);
    const rejected = settleAttempt(row, http(200, '{"error":"busy"}'), null, { ...policy, ...rules });
    expect(rejected).toMatchObject({ state: 'pending', errorCode: 'rejected_response' });
    const final = settleAttempt(row, http(503), null, { ...policy, ...rules });
    expect(final).toMatchObject({ state: 'failed', status: 503 });
  });

  it('the library refuses a bad setting when the manager is made', async () => {
    const db = await createTestDb({ max: 2 });
    try {
      expect(() => db.manager({ retryableStatuses: [1000] })).toThrow(ValidationError);
      expect(() => db.manager({ shouldRetry: 'yes' as never })).toThrow(/shouldRetry must be a function/);
    } finally {
      await db.close();
    }
  });

  it('the config file takes the status list (replacing or editing)', async () => {
    const path = join(tmpdir(), `fusillade-retry-${process.pid}.json`);
    await writeFile(path, JSON.stringify({ daemon: { maxRetries: 2, retryableStatuses: { add: [404] } } }));
    const settings = await resolveSettings({ config: path }, {});
    expect(settings.daemonConfig).toMatchObject({ maxRetries: 2, retryableStatuses: { add: [404] } });
    await writeFile(path, JSON.stringify({ daemon: { retryableStatuses: [503, 'x'] } }));
    await expect(resolveSettings({ config: path }, {})).rejects.toThrow(
      /"daemon\.retryableStatuses" must list HTTP statuses/,
    );
  });
});

describe('retry rules and messages in a running daemon', () => {
  let db: TestDb;
  let mock: MockUpstream;

  beforeAll(async () => {
    db = await createTestDb();
    mock = await startMockUpstream();
    mock.setBehaviour((req): MockBehaviour => {
      const id = req.customId ?? '';
      if (id.startsWith('nf-') && req.attemptNo === 1) return { kind: 'status', status: 404, body: '' };
      if (id.startsWith('five-') && req.attemptNo === 1)
        return { kind: 'status', status: 500, body: OPENAI_400 };
      if (id.startsWith('busy-') && req.attemptNo === 1)
        return { kind: 'status', status: 200, body: { error: 'busy' } };
      if (id.startsWith('bad-')) return { kind: 'status', status: 400, body: OPENAI_400 };
      if (id.startsWith('anth-')) return { kind: 'status', status: 400, body: ANTHROPIC_400 };
      if (id.startsWith('unavail-')) return { kind: 'status', status: 503, body: '<h1>down</h1>' };
      return { kind: 'ok' };
    });
  });
  afterAll(async () => {
    await mock.close();
    await db.close();
  });

  async function runWith(config: ManagerConfig, prefix: string, n = 2) {
    const m = db.manager({ pollIntervalMs: 100, backoffMs: 5, maxBackoffMs: 10, maxRetries: 3, ...config });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, n, { prefix }));
      const status = await waitForBatchEnd(m, batchId);
      return { m, batchId, status, requests: await m.getBatchRequests(batchId) };
    } finally {
      await daemon.stop();
    }
  }

  it("a final failure's error.message is the upstream's own; the code stays http_<status>", async () => {
    const { requests } = await runWith({ logger: () => {} }, 'bad-', 1);
    expect(requests[0]).toMatchObject({
      state: 'failed',
      responseStatus: 400,
      error: { code: 'http_400', message: "Unsupported value: 'temperature' does not support 7" },
    });
    const anth = await runWith({ logger: () => {} }, 'anth-', 1);
    expect(anth.requests[0]).toMatchObject({
      state: 'failed',
      error: { code: 'http_400', message: 'max_tokens: field required' },
    });
  });

  it('added statuses are retried, and a retried attempt keeps the upstream message as its last error', async () => {
    const added = await runWith({ retryableStatuses: { add: [404] }, logger: () => {} }, 'nf-');
    expect(added.requests.map((r) => [r.state, r.attempt])).toEqual([
      ['completed', 2],
      ['completed', 2],
    ]);
    const defaults = await runWith({ logger: () => {} }, 'nf-d-');
    expect(defaults.requests.map((r) => r.state)).toEqual(['failed', 'failed']);
    expect(defaults.requests[0]).toMatchObject({
      attempt: 1,
      error: { code: 'http_404', message: '404 Not Found' },
    });

    // A replacing list without 500 makes it final.
    const replaced = await runWith({ retryableStatuses: [503], logger: () => {} }, 'five-', 1);
    expect(replaced.requests[0]).toMatchObject({ state: 'failed', attempt: 1, responseStatus: 500 });
  });

  it('shouldRetry retries a 200 it rejects and stops retries it refuses', async () => {
    const seen: number[] = [];
    const log = memoryLogger();
    const { requests } = await runWith(
      {
        logger: log.logger,
        shouldRetry: (outcome, request) => {
          if (outcome.kind !== 'http') return undefined;
          seen.push(request.attempt);
          if (outcome.status === 200) return outcome.body.includes('"error"');
          if (outcome.status === 503) return false;
          return undefined;
        },
      },
      'busy-',
    );
    expect(requests.map((r) => [r.state, r.attempt])).toEqual([
      ['completed', 2],
      ['completed', 2],
    ]);
    expect(seen.sort()).toEqual([1, 1, 2, 2]);
    const refused = await runWith(
      { logger: () => {}, shouldRetry: (o) => (o.kind === 'http' && o.status === 503 ? false : undefined) },
      'unavail-',
      1,
    );
    expect(refused.requests[0]).toMatchObject({
      state: 'failed',
      attempt: 1,
      error: { code: 'http_503', message: '503 Service Unavailable: <h1>down</h1>' },
    });
  });

  it('a throwing hook is logged and the status rules decide', async () => {
    const log = memoryLogger();
    const { requests } = await runWith(
      {
        logger: log.logger,
        shouldRetry: () => {
          throw new Error('hook bug');
        },
      },
      'five-t-',
      1,
    );
    // five-t- answers 500 first: the hook threw, the default statuses retried it, the 200 completed.
    expect(requests[0]).toMatchObject({ state: 'completed', attempt: 2 });
    expect(log.entries.some((e) => e.msg === 'shouldRetry threw')).toBe(true);
  });
});
