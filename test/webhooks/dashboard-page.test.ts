import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createServer, type FusilladeServer } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { parseWebhookEndpointId } from '../../src/webhooks/endpoints.js';
import { type Browser, launchChromium, signIn, submitBatch } from '../dashboard/browser.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

/**
 * The dashboard's webhooks page in Debian's Chromium: add an endpoint (its secret shown once, and
 * it verifies what the receiver gets), see its deliveries, enable it after it was disabled, remove
 * it through the app's dialog.
 */

let db: TestDb;
let mock: MockUpstream;
let receiver: WebhookReceiver;
let server: FusilladeServer;
let browser: Browser;
let page: Page;
let key: string;

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  receiver = await startWebhookReceiver();
  server = await createServer({
    pool: db.pool,
    schema: db.schema,
    port: 0,
    routing: { upstream: `${mock.url}/v1` },
    daemonConfig: { pollIntervalMs: 100, logger: () => {} },
    allowPrivateWebhooks: true,
  });
  key = (await createApiKey(db.pool, server.manager.schema, { owner: 'carol' })).key;
  browser = await launchChromium(() => server.url, { width: 1280, height: 800 });
  page = browser.page;
  await signIn(page, server.url, key);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await receiver?.close();
  await mock?.close();
  await db?.close();
});

const endpointRows = () => page.locator('tr[data-endpoint]');

describe('the webhooks page', () => {
  it('adds, shows, enables and removes endpoints; deliveries appear', async () => {
    await page.click('a[data-nav=webhooks]');
    await page.waitForSelector('#webhook-url');
    // The lists arrive after the form: wait for them.
    await expect.poll(() => page.locator('tbody').first().textContent()).toContain('No endpoints yet');

    // Only batch.completed: the other events are unticked.
    await page.fill('#webhook-url', `${receiver.url}/hooks`);
    for (const e of ['batch.failed', 'batch.expired', 'batch.cancelled'])
      await page.uncheck(`input[type=checkbox][value="${e}"]`);
    await page.getByRole('button', { name: 'Add endpoint' }).click();
    const secret = (await page.locator('#webhook-secret').textContent()) ?? '';
    expect(secret).toMatch(/^whsec_/);
    receiver.secret = secret;
    await expect.poll(() => endpointRows().count()).toBe(1);
    const row = endpointRows().first();
    expect(await row.textContent()).toContain(`${receiver.url}/hooks`);
    expect(await row.locator('td').nth(1).textContent()).toBe('batch.completed');
    expect(await row.locator('.badge').textContent()).toBe('active');

    // A batch ends: the receiver verifies the delivery with the secret the page showed, and the
    // page lists it.
    const batchId = await submitBatch(server.url, key, 3, 'gpt-hooks');
    // Condition waits with hang guards (60 s), not 15-30 s speed checks: the delivery and the page's
    // next poll come when a loaded machine gets to them.
    await expect.poll(() => receiver.acceptedById().size, { timeout: 60_000 }).toBe(1);
    expect(receiver.received[0]!.error).toBeNull();
    expect(receiver.received[0]!.event).toMatchObject({ type: 'batch.completed', data: { id: batchId } });
    await expect
      .poll(() => page.locator('a.batch-link').allTextContents(), { timeout: 60_000 })
      .toHaveLength(1);

    // Disabled after failing (as the deliverer does): the page says so and enables it again.
    const id = await row.getAttribute('data-endpoint');
    await db.pool.query(
      `UPDATE ${server.manager.schema}.webhook_endpoints SET disabled_at = now() WHERE id = $1`,
      [parseWebhookEndpointId(id!)],
    );
    await page.reload();
    await expect.poll(() => endpointRows().first().locator('.badge').textContent()).toBe('disabled');
    await endpointRows().first().getByRole('button', { name: 'Enable' }).click();
    await expect.poll(() => endpointRows().first().locator('.badge').textContent()).toBe('active');

    // Removing asks first; keeping it changes nothing.
    const dialog = page.locator('dialog.app-dialog');
    await endpointRows().first().getByRole('button', { name: 'Remove' }).click();
    await dialog.getByRole('button', { name: 'Keep' }).click();
    expect(await endpointRows().count()).toBe(1);
    await endpointRows().first().getByRole('button', { name: 'Remove' }).click();
    await dialog.getByRole('button', { name: 'Remove' }).click();
    await expect.poll(() => endpointRows().count()).toBe(0);
    const listed = await fetch(`${server.url}/api/dashboard/webhooks`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(((await listed.json()) as { data: unknown[] }).data).toEqual([]);
  });

  it('shows the server’s refusal of a bad URL in the form', async () => {
    await page.goto(`${server.url}/#/webhooks`);
    await page.waitForSelector('#webhook-url');
    await page.fill('#webhook-url', 'ftp://example.com/x');
    await page.getByRole('button', { name: 'Add endpoint' }).click();
    await expect.poll(() => page.locator('.form-error').textContent()).not.toBe('');
    expect(await endpointRows().count()).toBe(0);
  });
});
