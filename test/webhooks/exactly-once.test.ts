import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type DaemonHandle, PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createServer, type FusilladeServer } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { addWebhookEndpoint } from '../../src/webhooks/endpoints.js';
import { chatLine, jsonl, upload, uuidOf } from '../server/support.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

/**
 * Issue 12's "done when": a receiver verifying signatures with the standardwebhooks package gets
 * exactly one accepted delivery per event, for a completed and a cancelled batch, with two servers
 * and two daemons running (four deliverers on one outbox), also when it answered 500 first.
 * The default retry schedule is used: the second attempt comes about 5 s after the first.
 */

vi.setConfig({ testTimeout: 120_000 });

let db: TestDb;
let mock: MockUpstream;
let receiver: WebhookReceiver;
const pools: pg.Pool[] = [];
const servers: FusilladeServer[] = [];
const daemons: DaemonHandle[] = [];
let alice: OpenAI;
let aliceOnB: OpenAI;

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  receiver = await startWebhookReceiver();
  const quiet = () => {};
  const common = {
    schema: db.schema,
    port: 0,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, logger: quiet },
    allowPrivateWebhooks: true,
  };
  for (let i = 0; i < 2; i++) {
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 8 });
    pools.push(pool);
    servers.push(await createServer({ ...common, pool }));
  }
  // Two more daemons, each with its own pool, as `fusillade daemon --allow-private-webhooks` runs.
  for (let i = 0; i < 2; i++) {
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 8 });
    pools.push(pool);
    const manager = new PostgresRequestManager(pool, {
      schema: db.schema,
      pollIntervalMs: 100,
      logger: quiet,
      webhooks: { allowPrivate: true },
    });
    daemons.push(await manager.run());
  }
  const s = servers[0]!.manager.schema;
  const key = (await createApiKey(db.pool, s, { owner: 'alice' })).key;
  alice = new OpenAI({ apiKey: key, baseURL: `${servers[0]!.url}/v1`, maxRetries: 0 });
  aliceOnB = new OpenAI({ apiKey: key, baseURL: `${servers[1]!.url}/v1`, maxRetries: 0 });
  const endpoint = await addWebhookEndpoint(db.pool, s, {
    owner: 'alice',
    url: receiver.url,
    allowPrivate: true,
  });
  receiver.secret = endpoint.secret;
  // Bob's endpoint must hear nothing of Alice's batches.
  await addWebhookEndpoint(db.pool, s, { owner: 'bob', url: `${receiver.url}/bob`, allowPrivate: true });
});

afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  await Promise.all(servers.map((s) => s.close()));
  await Promise.all(pools.map((p) => p.end()));
  await receiver?.close();
  await mock?.close();
  await db?.close();
});

describe('webhooks with two servers and two daemons', () => {
  it('delivers each event once, signed, after a 500 on the first attempt', async () => {
    receiver.answer = ({ nth }) => (nth === 1 ? 500 : 200);
    mock.setBehaviour((req) => (req.customId?.startsWith('hang-') ? { kind: 'hang' } : { kind: 'ok' }));

    // A batch that completes.
    const done = await alice.batches.create({
      input_file_id: (await upload(alice, jsonl(Array.from({ length: 20 }, (_, i) => chatLine(i))))).id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    // A batch cancelled (through the other server) while its requests are in flight.
    const hanging = Array.from({ length: 10 }, (_, i) => chatLine(i, { custom_id: `hang-${i}` }));
    const cancelled = await alice.batches.create({
      input_file_id: (await upload(alice, jsonl(hanging))).id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitFor(() => mock.inFlight.total > 0, 30_000);
    await aliceOnB.batches.cancel(cancelled.id);

    const s = servers[0]!.manager.schema;
    const deliveries = await waitFor(async () => {
      const { rows } = await db.pool.query(
        `SELECT d.event_id, d.event_type, d.batch_id, d.state, d.attempts, d.last_status, e.owner
           FROM ${s}.webhook_deliveries d JOIN ${s}.webhook_endpoints e ON e.id = d.endpoint_id ORDER BY d.event_type`,
      );
      return rows.length === 2 && rows.every((r) => r.state === 'delivered') ? rows : null;
    }, 60_000);
    expect(deliveries).toEqual([
      expect.objectContaining({
        event_type: 'batch.cancelled',
        batch_id: uuidOf(cancelled.id),
        attempts: 2,
        last_status: 200,
        owner: 'alice',
      }),
      expect.objectContaining({
        event_type: 'batch.completed',
        batch_id: uuidOf(done.id),
        attempts: 2,
        last_status: 200,
        owner: 'alice',
      }),
    ]);
    expect((await alice.batches.retrieve(done.id)).status).toBe('completed');
    expect((await alice.batches.retrieve(cancelled.id)).status).toBe('cancelled');

    // Two attempts were claimed per event (attempts = 2), and the receiver saw exactly those two:
    // the 500 and one accepted delivery. Every request verified.
    expect(receiver.received).toHaveLength(4);
    expect(receiver.received.every((r) => r.error === null && r.path === '/hooks')).toBe(true);
    const accepted = receiver.acceptedById();
    expect([...accepted.values()]).toEqual([1, 1]);
    const events = receiver.received.filter((r) => r.status === 200).map((r) => r.event!);
    expect(events.map((e) => [e.type, e.data.id]).sort()).toEqual(
      [
        ['batch.cancelled', cancelled.id],
        ['batch.completed', done.id],
      ].sort(),
    );
    for (const r of receiver.received) {
      const event = JSON.parse(r.body);
      expect(Object.keys(event)).toEqual(['object', 'id', 'type', 'created_at', 'data']);
      expect(event).toMatchObject({ object: 'event', id: expect.stringMatching(/^evt_[0-9a-f]{32}$/) });
      expect(r.headers['webhook-id']).toBe(event.id);
      expect(r.headers['webhook-signature']).toMatch(/^v1,/);
      expect(r.headers['content-type']).toBe('application/json');
    }
    // The same event, byte for byte, on the retry; a fresh timestamp (the receiver's window holds).
    for (const id of accepted.keys()) {
      const [first, second] = receiver.received.filter((r) => r.event?.id === id);
      expect(second!.body).toBe(first!.body);
      expect(first!.status).toBe(500);
      const gap = Number(second!.headers['webhook-timestamp']) - Number(first!.headers['webhook-timestamp']);
      expect(gap).toBeGreaterThanOrEqual(4); // the first retry waits ≈5 s
    }
    mock.setBehaviour(null);
  });
});
