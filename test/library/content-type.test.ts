import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/domain/errors.js';
import type { RequestTemplateInput } from '../../src/domain/templates.js';
import { isJsonContentType } from '../../src/domain/templates.js';
import type { DaemonHandle, PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
let manager: PostgresRequestManager;
let daemon: DaemonHandle;

const TEXT_ANSWER = 'plain answer\nline "two" \\ done';

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour((req): MockBehaviour => {
    if (req.path === '/echo') {
      return {
        kind: 'status',
        status: 200,
        body: TEXT_ANSWER,
        headers: { 'content-type': 'text/plain' },
      };
    }
    if (req.path === '/form') return { kind: 'status', status: 200, body: { ok: req.body } };
    if (req.path === '/html') return { kind: 'not-json' };
    return { kind: 'ok' };
  });
  manager = db.manager({
    pollIntervalMs: 100,
    maxRetries: 1,
    backoffMs: 5,
    maxBackoffMs: 10,
    logger: () => {},
  });
  daemon = await manager.run();
});
afterAll(async () => {
  await daemon.stop();
  await mock.close();
  await db.close();
});

const base = (over: Partial<RequestTemplateInput>): RequestTemplateInput => ({
  endpoint: mock.url,
  method: 'POST',
  path: '/v1/chat/completions',
  body: '{"model":"m"}',
  model: 'm',
  apiKey: '',
  ...over,
});

describe('bodies and answers that are not JSON, where the template says so', () => {
  it('knows JSON media types', () => {
    expect(isJsonContentType(undefined)).toBe(true);
    expect(isJsonContentType('application/json; charset=utf-8')).toBe(true);
    expect(isJsonContentType('application/vnd.api+json')).toBe(true);
    expect(isJsonContentType('text/plain')).toBe(false);
    expect(isJsonContentType('application/x-www-form-urlencoded')).toBe(false);
  });

  it('validates: a JSON template still needs a JSON body; a bad media type is refused', async () => {
    await expect(manager.createFile('x', null, [base({ body: 'not json' })])).rejects.toMatchObject({
      issues: [{ code: 'invalid_json_body' }],
    });
    await expect(
      manager.createFile('x', null, [base({ body: 'a', contentType: 'text/plain\r\nx-evil: 1' })]),
    ).rejects.toThrow(ValidationError);
    await expect(
      manager.createFile('x', null, [base({ body: 'a', contentType: 'plain' })]),
    ).rejects.toMatchObject({
      issues: [{ code: 'invalid_content_type', param: 'contentType' }],
    });
  });

  it('sends the body and Content-Type as given and takes any answer; results hold text as a string', async () => {
    const fileId = await manager.createFile('mixed.jsonl', null, [
      base({
        path: '/echo',
        body: 'hello, plain world\n',
        contentType: 'text/plain; charset=utf-8',
        customId: 't',
      }),
      base({
        path: '/form',
        body: 'a=1&b=two',
        contentType: 'application/x-www-form-urlencoded',
        customId: 'f',
      }),
      base({ path: '/html', customId: 'j' }),
    ]);
    const batchId = await manager.createBatch(fileId);
    const status = await waitForBatchEnd(manager, batchId);
    expect(status).toMatchObject({ completedRequests: 2, failedRequests: 1 });

    const sent = new Map(mock.requests.map((r) => [r.customId, r]));
    expect(sent.get('t')).toMatchObject({ body: 'hello, plain world\n' });
    expect(sent.get('t')!.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(sent.get('f')!.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(sent.get('j')!.headers['content-type']).toBe('application/json');

    const requests = await manager.getBatchRequests(batchId);
    expect(requests.find((r) => r.customId === 't')).toMatchObject({
      state: 'completed',
      responseBody: TEXT_ANSWER,
    });
    // The LLM default is unchanged: a JSON template's 2xx that is not JSON is retried, then fails.
    expect(requests.find((r) => r.customId === 'j')).toMatchObject({
      state: 'failed',
      attempt: 2,
      error: { code: 'invalid_response' },
    });

    const lines = new Map<string, { response: { body: unknown } | null; error: unknown }>();
    for await (const line of manager.getBatchResults(batchId)) {
      const parsed = JSON.parse(line);
      lines.set(parsed.custom_id, parsed);
    }
    expect(lines.get('t')!.response!.body).toBe(TEXT_ANSWER);
    expect(lines.get('f')!.response!.body).toEqual({ ok: 'a=1&b=two' });
    expect(lines.get('j')!.error).toMatchObject({ code: 'invalid_response' });

    // Sizes stay exact with quoted text answers.
    const batch = await manager.getBatch(batchId);
    let bytes = 0;
    for await (const line of manager.getFileContent(batch.outputFileId!))
      bytes += Buffer.byteLength(line) + 1;
    expect((await manager.getFile(batch.outputFileId!)).sizeBytes).toBe(bytes);

    // The input file rebuilt: a text body is a JSON string.
    const input = [];
    for await (const line of manager.getFileContent(fileId)) input.push(JSON.parse(line));
    expect(input[0]).toMatchObject({ custom_id: 't', body: 'hello, plain world\n' });
    expect(input[2]).toMatchObject({ custom_id: 'j', body: { model: 'm' } });
  });
});
