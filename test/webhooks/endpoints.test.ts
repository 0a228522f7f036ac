import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { WebhookDeliverer } from '../../src/webhooks/delivery.js';
import {
  addWebhookEndpoint,
  listWebhookEndpoints,
  parseWebhookEndpointId,
} from '../../src/webhooks/endpoints.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload, uuidOf } from '../server/support.js';
import { createTestDb } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

/** Owners' endpoints from the dashboard's API, event filters, disabling, and private addresses. */

vi.setConfig({ testTimeout: 120_000 });

let mock: MockUpstream;
let receiver: WebhookReceiver;
let t: TestServer;
const quiet = { info() {}, warn() {} };

beforeAll(async () => {
  mock = await startMockUpstream();
  receiver = await startWebhookReceiver();
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, logger: () => {} },
    allowPrivateWebhooks: true,
    webhooks: {
      pollIntervalMs: 50,
      retryScheduleMs: [50, 50, 50, 50, 50, 50],
      disable: { failures: 3, minStreakMs: 0 },
    },
  });
});
afterAll(async () => {
  await t?.close();
  await receiver?.close();
  await mock?.close();
});

// biome-ignore lint/suspicious/noExplicitAny: JSON answers are checked field by field.
type Json = any;

async function json(res: Promise<Response> | Response): Promise<Json> {
  return (await res).json();
}

function api(key: string, path: string, init: { method?: string; body?: unknown } = {}) {
  return fetch(`${t.server.url}/api/dashboard/${path}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });
}

async function runBatch(lines = 3): Promise<string> {
  const file = await upload(t.alice, jsonl(Array.from({ length: lines }, (_, i) => chatLine(i))));
  const batch = await t.alice.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  await waitFor(async () => (await t.alice.batches.retrieve(batch.id)).status === 'completed', 30_000);
  return batch.id;
}

describe("an owner's webhook endpoints", () => {
  it('are added, listed and removed from the dashboard API, each owner seeing only their own', async () => {
    const added = await api(t.aliceKey, 'webhooks', {
      method: 'POST',
      body: { url: receiver.url, events: ['batch.completed', 'batch.cancelled'] },
    });
    expect(added.status).toBe(200);
    const endpoint = await json(added);
    expect(endpoint).toMatchObject({
      id: expect.stringMatching(/^we_[0-9a-f]{32}$/),
      object: 'webhook_endpoint',
      url: receiver.url,
      events: ['batch.completed', 'batch.cancelled'],
      status: 'active',
      secret: expect.stringMatching(/^whsec_/),
    });
    const list = await json(api(t.aliceKey, 'webhooks'));
    expect(list.data.map((e: { id: string }) => e.id)).toEqual([endpoint.id]);
    expect(JSON.stringify(list)).not.toContain(endpoint.secret);
    // Bob sees none of it and cannot remove it.
    expect((await json(api(t.bobKey, 'webhooks'))).data).toEqual([]);
    expect((await api(t.bobKey, `webhooks/${endpoint.id}`, { method: 'DELETE' })).status).toBe(404);
    expect((await api(t.bobKey, `webhooks/${endpoint.id}/enable`, { method: 'POST' })).status).toBe(404);
    // Bad input is a 400 naming the field; no key is a 401.
    const bad = await api(t.aliceKey, 'webhooks', {
      method: 'POST',
      body: { url: receiver.url, events: ['x'] },
    });
    expect(bad.status).toBe(400);
    expect((await json(bad)).error).toMatchObject({ code: 'invalid_events', param: 'events' });
    expect((await fetch(`${t.server.url}/api/dashboard/webhooks`)).status).toBe(401);
    const removed = await api(t.aliceKey, `webhooks/${endpoint.id}`, { method: 'DELETE' });
    expect(await json(removed)).toEqual({ id: endpoint.id, object: 'webhook_endpoint', deleted: true });
    expect((await json(api(t.aliceKey, 'webhooks'))).data).toEqual([]);
  });

  it('hear only the events they asked for', async () => {
    const created = await addWebhookEndpoint(t.db.pool, t.s, {
      owner: 'alice',
      url: receiver.url,
      events: 'batch.cancelled',
      allowPrivate: true,
    });
    const batch = await runBatch();
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.webhook_deliveries WHERE batch_id = $1`,
      [uuidOf(batch)],
    );
    expect(rows[0].n).toBe(0);
    await api(t.aliceKey, `webhooks/${created.id}`, { method: 'DELETE' });
  });

  it('is disabled after failing repeatedly, shown as such, and can be enabled again', async () => {
    receiver.answer = () => 500;
    const created = await json(
      api(t.aliceKey, 'webhooks', { method: 'POST', body: { url: `${receiver.url}/flaky` } }),
    );
    receiver.secret = created.secret;
    const flaky = () => receiver.received.filter((r) => r.path === '/hooks/flaky');
    await runBatch();
    const disabled = await waitFor(async () => {
      const data = (await json(api(t.aliceKey, 'webhooks'))).data;
      return data[0]?.status === 'disabled' ? data[0] : null;
    });
    expect(disabled).toMatchObject({ failures: 3, last_error: 'receiver answered 500' });
    expect(disabled.disabled_at).toBeGreaterThan(0);
    // Its delivery ended failed after the three attempts the receiver saw.
    const deliveries = (await json(api(t.aliceKey, 'webhooks/deliveries'))).data;
    expect(deliveries).toEqual([
      expect.objectContaining({
        state: 'failed',
        attempts: 3,
        last_status: 500,
        last_error: 'receiver answered 500; endpoint disabled after repeated failures',
      }),
    ]);
    expect(flaky()).toHaveLength(3);
    // A disabled endpoint hears nothing of batches ending now.
    await runBatch();
    expect((await json(api(t.aliceKey, 'webhooks/deliveries'))).data).toHaveLength(1);

    receiver.answer = () => 200;
    const enabled = await json(api(t.aliceKey, `webhooks/${created.id}/enable`, { method: 'POST' }));
    expect(enabled).toMatchObject({ status: 'active', failures: 0 });
    const batch = await runBatch();
    await waitFor(() => flaky().some((r) => r.status === 200 && r.event?.data.id === batch));
    // The receiver's answer is recorded once the deliverer has written it.
    const endpoint = await waitFor(async () => {
      const [e] = await listWebhookEndpoints(t.db.pool, t.s, { owner: 'alice' });
      return e?.lastSuccessAt ? e : null;
    });
    expect(endpoint).toMatchObject({ status: 'active', failures: 0, lastSuccessAt: expect.any(Date) });
  });
});

describe('private receiver addresses', () => {
  it('are refused at delivery unless allowed, whether named or literal, and the receiver hears nothing', async () => {
    // A schema of its own: no other deliverer (the server's allows private addresses) may take these.
    const db = await createTestDb();
    const s = `"${db.schema}"`;
    try {
      const before = receiver.received.length;
      for (const path of ['named', 'literal']) {
        const host = path === 'named' ? 'localhost' : '127.0.0.1';
        const e = await addWebhookEndpoint(db.pool, s, {
          owner: 'carol',
          url: `http://${host}:${receiver.port}/${path}`,
          allowPrivate: true,
        });
        await db.pool.query(
          `INSERT INTO ${s}.webhook_deliveries (endpoint_id, event_id, event_type, batch_id, event_created_at)
           VALUES ($1, 'evt_private', 'batch.completed', gen_random_uuid(), now())`,
          [parseWebhookEndpointId(e.id)],
        );
      }
      const deliverer = new WebhookDeliverer(
        { pool: db.pool, schema: s, log: quiet },
        { allowPrivate: false },
      );
      await deliverer.tick();
      await deliverer.stop();
      const { rows } = await db.pool.query(
        `SELECT e.url, d.state, d.attempts, d.last_error FROM ${s}.webhook_deliveries d
           JOIN ${s}.webhook_endpoints e ON e.id = d.endpoint_id ORDER BY e.url`,
      );
      expect(rows).toHaveLength(2);
      for (const r of rows) {
        expect(r).toMatchObject({ state: 'pending', attempts: 1 });
        expect(r.last_error).toMatch(/private address (127\.0\.0\.1|::1) .*--allow-private-webhooks/);
      }
      expect(receiver.received.length).toBe(before);
      // The same rows go out once the deliverer allows private addresses.
      receiver.answer = () => 200;
      await db.pool.query(`UPDATE ${s}.webhook_deliveries SET next_attempt_at = now()`);
      const allowed = new WebhookDeliverer({ pool: db.pool, schema: s, log: quiet }, { allowPrivate: true });
      await allowed.tick();
      await allowed.stop();
      expect(
        receiver.received
          .slice(before)
          .map((r) => r.path)
          .sort(),
      ).toEqual(['/literal', '/named']);
    } finally {
      await db.close();
    }
  });

  it('are refused when added from the dashboard of a server that does not allow them', async () => {
    const strict = await startTestServer();
    try {
      const res = await fetch(`${strict.server.url}/api/dashboard/webhooks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${strict.aliceKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ url: 'http://127.0.0.1:9/hooks' }),
      });
      expect(res.status).toBe(400);
      expect((await json(res)).error).toMatchObject({ code: 'invalid_url', param: 'url' });
    } finally {
      await strict.close();
    }
  });
});
