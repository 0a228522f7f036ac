import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, revokeApiKey } from '../../src/store/api-keys.js';
import {
  chatLine,
  jsonl,
  settle,
  startTestServer,
  type TestServer,
  upload,
  uuidOf,
} from '../server/support.js';

let t: TestServer;
let batchId: string;
beforeAll(async () => {
  t = await startTestServer();
  const file = await upload(t.alice, jsonl(Array.from({ length: 6 }, (_, i) => chatLine(i))));
  const batch = await t.alice.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { project: 'dash' },
  });
  batchId = batch.id;
});
afterAll(() => t.close());

// biome-ignore lint/suspicious/noExplicitAny: JSON answers are checked by the assertions themselves.
const json = (res: Response): Promise<any> => res.json();

const get = (path: string, key?: string, init: RequestInit = {}) =>
  fetch(`${t.server.url}${path}`, {
    ...init,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(init.headers ?? {}) },
  });

describe('static files', () => {
  it('serves the page and assets with their content types and a strict CSP', async () => {
    const index = await get('/');
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await index.text();
    expect(html).toBe(await readFile(new URL('../../dashboard/index.html', import.meta.url), 'utf8'));
    expect(html).not.toMatch(/https?:\/\//); // nothing loaded from elsewhere
    const js = await get('/assets/app.js');
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await get('/assets/style.css')).headers.get('content-type')).toBe('text/css; charset=utf-8');
    expect((await get('/assets/favicon.svg')).headers.get('content-type')).toBe('image/svg+xml');
    expect((await get('/assets/pages/batch.js')).status).toBe(200);
  });

  it('refuses directory traversal, unknown files and other methods', async () => {
    for (const path of [
      '/assets/../package.json',
      '/assets/%2e%2e/package.json',
      '/assets/..%2f..%2fpackage.json',
      '/assets/%2e%2e%2f%2e%2e%2fsrc%2fserver%2fserver.ts',
      '/assets/nope.js',
      '/assets/%00.js',
      '/assets/%E0%A4%A.js',
      '/nothing-here',
    ]) {
      const res = await get(path);
      expect(res.status, path).toBe(404);
      expect(await res.text()).not.toContain('"name": "fusillade"');
    }
    const post = await get('/assets/app.js', undefined, { method: 'POST' });
    expect(post.status).toBe(405);
  });
});

describe('dashboard API', () => {
  it('requires a valid, unrevoked key', async () => {
    expect((await get('/api/dashboard/me')).status).toBe(401);
    expect((await get('/api/dashboard/batches', 'fsk_wrong')).status).toBe(401);
    expect((await get('/api/dashboard/operations')).status).toBe(401);
    const me = await get('/api/dashboard/me', t.aliceKey);
    expect(await json(me)).toEqual({ owner: 'alice' });
    const temp = await createApiKey(t.db.pool, t.s, { owner: 'carol' });
    expect((await get('/api/dashboard/me', temp.key)).status).toBe(200);
    await revokeApiKey(t.db.pool, t.s, temp.id);
    expect((await get('/api/dashboard/me', temp.key)).status).toBe(401);
  });

  it('lists the owner’s batches with progress in the /v1 id forms', async () => {
    const res = await get('/api/dashboard/batches?q=dash', t.aliceKey);
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.data).toHaveLength(1);
    expect(body.data[0]).toMatchObject({
      id: batchId,
      status: 'in_progress',
      metadata: { project: 'dash' },
      counts: { total: 6, pending: 6, completed: 0, failed: 0, canceled: 0, in_progress: 0 },
    });
    expect(body.data[0].input_file_id).toMatch(/^file-[0-9a-f]{32}$/);
    const bob = await json(await get('/api/dashboard/batches', t.bobKey));
    expect(bob.data).toEqual([]);
    const bad = await get('/api/dashboard/batches?status=sleeping', t.aliceKey);
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.param).toBe('status');
  });

  it('shows requests, one request, progress and retries failed ones; other owners get 404', async () => {
    const uuid = uuidOf(batchId);
    await settle(t, uuid, (line) =>
      line % 2 === 0
        ? { status: 400, body: '{"error":{"message":"no"}}' }
        : { status: 200, body: '{"ok":1}' },
    );
    const failed = await json(
      await get(`/api/dashboard/batches/${batchId}/requests?state=failed`, t.aliceKey),
    );
    expect(failed.data.map((r: { custom_id: string }) => r.custom_id)).toEqual(['req-1', 'req-3', 'req-5']);
    expect(failed.data[0]).toMatchObject({ state: 'failed', status_code: 400, attempts: 0 });
    const one = await json(
      await get(`/api/dashboard/batches/${batchId}/requests/${failed.data[0].id}`, t.aliceKey),
    );
    expect(one).toMatchObject({
      custom_id: 'req-1',
      response_body: '{"error":{"message":"no"}}',
      path: '/v1/chat/completions',
    });
    expect(JSON.parse(one.body).messages[0].content).toBe('hello 1');

    const progress = await json(await get(`/api/dashboard/batches/${batchId}/progress`, t.aliceKey));
    expect(progress.status).toBe('completed');
    expect(progress.counts).toMatchObject({ total: 6, completed: 3, failed: 3 });
    expect(progress.output_file_id).toMatch(/^file-/);
    expect(progress.throughput.completed.reduce((a: number, b: number) => a + b, 0)).toBe(3);

    for (const path of [
      `/api/dashboard/batches/${batchId}/requests`,
      `/api/dashboard/batches/${batchId}/progress`,
      `/api/dashboard/batches/${batchId}/requests/${failed.data[0].id}`,
    ]) {
      expect((await get(path, t.bobKey)).status, path).toBe(404);
    }
    expect((await get(`/api/dashboard/batches/${batchId}/retry`, t.bobKey, { method: 'POST' })).status).toBe(
      404,
    );
    expect((await get('/api/dashboard/batches/batch_nothex/progress', t.aliceKey)).status).toBe(404);
    expect((await get(`/api/dashboard/batches/${batchId}/requests?after_line=-1`, t.aliceKey)).status).toBe(
      400,
    );

    // Retry is deliberate: an ended batch is reopened only when asked to.
    const post = (body: unknown) =>
      get(`/api/dashboard/batches/${batchId}/retry`, t.aliceKey, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const refused = await post({});
    expect(refused.status).toBe(409);
    expect((await json(refused)).error).toMatchObject({ code: 'reopen_required', param: 'reopen' });
    expect((await post({ only: 'sometimes', reopen: true })).status).toBe(400);
    // Only the retriable ones: a 400 cannot succeed, so nothing is requeued and nothing reopens.
    expect(await json(await post({ only: 'retriable', reopen: true }))).toEqual({
      id: batchId,
      retried: 0,
      reopened: false,
    });
    expect(await json(await post({ reopen: true }))).toEqual({ id: batchId, retried: 3, reopened: true });
    const reopened = await json(await get(`/api/dashboard/batches/${batchId}/progress`, t.aliceKey));
    expect(reopened.status).toBe('in_progress');
    expect(reopened.counts).toMatchObject({ pending: 3, completed: 3, failed: 0 });
    expect(reopened.retried).toBe(3);
    expect(reopened.state_counts).toMatchObject({ pending: 3, completed: 3, failed: 0, canceled: 0 });
    // The failures stay in the history: on the chart and on the request.
    expect(reopened.throughput.failed.reduce((a: number, b: number) => a + b, 0)).toBe(3);
    const again = await json(
      await get(`/api/dashboard/batches/${batchId}/requests/${failed.data[0].id}`, t.aliceKey),
    );
    expect(again.state).toBe('pending');
    expect(again.history).toEqual([
      expect.objectContaining({ status_code: 400, response_body: '{"error":{"message":"no"}}' }),
    ]);
  });

  it("answers operations data to any valid key, with only the key owner's activity, and 404 for unknown routes", async () => {
    const ops = await json(await get('/api/dashboard/operations', t.aliceKey));
    expect(ops.queue).toMatchObject({ live_batches: 1, pending: 3, in_flight: 0 });
    expect(ops.models.find((m: { model: string }) => m.model === 'gpt-test')).toMatchObject({
      in_flight: 0,
      pending: 3,
    });
    expect(Array.isArray(ops.daemons)).toBe(true);
    // Bob has no batches: alice's live batch, its model and its queue are not his to see.
    const bobs = await json(await get('/api/dashboard/operations', t.bobKey));
    expect(bobs.queue).toEqual({ pending: 0, ready: 0, in_flight: 0, live_batches: 0 });
    expect(bobs.models).toEqual([]);
    expect(bobs.dispatch.series).toEqual([]);
    expect((await get('/api/dashboard/nope', t.aliceKey)).status).toBe(404);
  });
});
