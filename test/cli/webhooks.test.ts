import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApiKey } from '../../src/store/api-keys.js';
import { chatLine, jsonl, upload } from '../server/support.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';
import { runCli, startCli, waitFor } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let db: TestDb;
let receiver: WebhookReceiver;
beforeAll(async () => {
  db = await createTestDb();
  receiver = await startWebhookReceiver();
});
afterAll(async () => {
  await receiver?.close();
  await db?.close();
});

const dbArgs = () => ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];

describe('fusillade webhooks', () => {
  it('add prints the secret last; list shows the endpoint without it; remove removes it', async () => {
    const refused = await runCli(['webhooks', 'add', '--owner', 'alice', '--url', receiver.url, ...dbArgs()]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/private or loopback address .*--allow-private-webhooks/);
    const bad = await runCli([
      'webhooks',
      'add',
      '--owner',
      'alice',
      '--url',
      'https://example.com/hooks',
      '--events',
      'batch.completed,batch.done',
      ...dbArgs(),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unknown event "batch.done"/);

    const added = await runCli([
      'webhooks',
      'add',
      '--owner',
      'alice',
      '--url',
      'https://example.com/hooks',
      '--events',
      'batch.completed,batch.cancelled',
      ...dbArgs(),
    ]);
    expect(added.code).toBe(0);
    const secret = added.stdout.trim().split('\n').pop()!;
    expect(secret).toMatch(/^whsec_/);
    const id = /added webhook endpoint (we_[0-9a-f]{32})/.exec(added.stdout)![1]!;
    const list = await runCli(['webhooks', 'list', ...dbArgs()]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(id);
    expect(list.stdout).toContain('https://example.com/hooks');
    expect(list.stdout).toContain('batch.completed,batch.cancelled');
    expect(list.stdout).toMatch(/\bactive\b/);
    expect(list.stdout).not.toContain(secret);
    const removed = await runCli(['webhooks', 'remove', id, ...dbArgs()]);
    expect(removed.code).toBe(0);
    expect((await runCli(['webhooks', 'list', ...dbArgs()])).stdout).not.toContain(id);
    const again = await runCli(['webhooks', 'remove', id, ...dbArgs()]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not found/);
  });

  it('serve --allow-private-webhooks delivers a signed batch.completed to a loopback receiver', async () => {
    const added = await runCli([
      'webhooks',
      'add',
      '--owner',
      'alice',
      '--url',
      receiver.url,
      '--allow-private-webhooks',
      ...dbArgs(),
    ]);
    expect(added.code).toBe(0);
    receiver.secret = added.stdout.trim().split('\n').pop()!;
    const serve = startCli([
      'serve',
      '--port',
      '0',
      '--upstream',
      'mock',
      '--allow-private-webhooks',
      ...dbArgs(),
    ]);
    try {
      await waitFor(() => /Batch API on (http:\/\/\S+)\/v1/.test(serve.output().stdout), 60_000);
      const server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
      const key = (await createApiKey(db.pool, `"${db.schema}"`, { owner: 'alice' })).key;
      const client = new OpenAI({ apiKey: key, baseURL: `${server}/v1`, maxRetries: 0 });
      const file = await upload(client, jsonl([chatLine(1)]));
      const batch = await client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      await waitFor(() => receiver.received.some((r) => r.event?.data.id === batch.id), 60_000);
      const got = receiver.received.find((r) => r.event?.data.id === batch.id)!;
      expect(got.error).toBeNull();
      expect(got.event).toMatchObject({ object: 'event', type: 'batch.completed', data: { id: batch.id } });
    } finally {
      serve.kill('SIGTERM');
      await serve.exited;
    }
  });
});
