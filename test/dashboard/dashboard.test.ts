import { existsSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createServer, type FusilladeServer } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { createTestDb, type TestDb } from '../support/db.js';
import {
  ARTIFACTS,
  type Browser,
  CHROMIUM,
  confirmRetry,
  launchChromium,
  submitBatch as submit,
} from './browser.js';

/**
 * End to end in headless Chromium (Debian's package, never a downloaded browser): the real server
 * with its in-process daemon sends a batch to the mock upstream while the dashboard watches.
 * Screenshots of each page go to test-artifacts/.
 */

const TOTAL = 160;
/** Every 8th request is refused by the upstream with a final 400 (20 of them: one page of the table). */
const refused = (i: number) => i % 8 === 5;
const REFUSED = Array.from({ length: TOTAL }, (_, i) => i).filter(refused).length;

let db: TestDb;
let mock: MockUpstream;
let server: FusilladeServer;
let browser: Browser;
let page: Page;
let key: string;
let batchId: string;

/**
 * Arrivals past a gate's count wait at the mock until the test opens it: the first test sees the
 * batch part-done and moving however slowly a loaded machine polls and draws (the batch's 5 s at a
 * quiet machine's pace could end before a loaded one showed its first count).
 */
let arrivals = 0;
const gates: { after: number; opened: Promise<void>; open: () => void }[] = [];
function gate(after: number): () => void {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  gates.push({ after, opened, open });
  return open;
}
// A test that failed before opening its gates does not hold the next tests' requests.
afterEach(() => {
  for (const g of gates) g.open();
});

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  db = await createTestDb();
  // 100 ms per answer at a limit of 3: the batch takes at least 5 s, so its progress is seen moving.
  mock = await startMockUpstream({ latencyMs: 100, recordBodies: false });
  mock.setBehaviour(async (req) => {
    const n = ++arrivals;
    for (const g of gates) if (n > g.after) await g.opened;
    const i = Number(req.customId?.replace('req-', ''));
    return refused(i)
      ? {
          kind: 'status',
          status: 400,
          delayMs: 100,
          body: {
            error: { message: `temperature of request ${i} is out of range`, type: 'invalid_request_error' },
          },
        }
      : { kind: 'ok', delayMs: 100 };
  });
  server = await createServer({
    pool: db.pool,
    schema: db.schema,
    port: 0,
    routing: { upstream: `${mock.url}/v1`, models: { 'gpt-dash': { limit: 3 } } },
    daemonConfig: { pollIntervalMs: 200 },
  });
  key = (await createApiKey(db.pool, server.manager.schema, { owner: 'alice' })).key;
  browser = await launchChromium(() => server.url);
  page = browser.page;
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await mock?.close();
  await db?.close();
});

const submitBatch = () => submit(server.url, key, TOTAL, 'gpt-dash', { project: 'dashboard-e2e' });

/** "123 / 240" of the batch's row in the list. */
async function doneInList(): Promise<number> {
  const text = await page.locator(`tr[data-id="${batchId}"] .counts span`).first().textContent();
  return Number(text!.split('/')[0]!.replace(/,/g, '').trim());
}

describe('dashboard in a browser', () => {
  it('signs in, watches a batch run, finds a failed request and downloads the output', async () => {
    expect(existsSync(CHROMIUM)).toBe(true);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // Sign in: a wrong key is refused with a message, the right one is remembered.
    await page.goto(`${server.url}/`);
    await expect.poll(() => page.locator('#api-key').getAttribute('type')).toBe('password');
    await page.screenshot({ path: `${ARTIFACTS}dashboard-signin.png` });
    await page.fill('#api-key', 'fsk_not-a-key');
    await page.click('button[type=submit]');
    await expect.poll(() => page.locator('#signin-error').textContent()).toContain('not valid');
    await page.fill('#api-key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('table.batches');
    expect(await page.evaluate('localStorage.getItem("fusillade.apiKey")')).toBe(key);
    expect(await page.locator('#owner').textContent()).toBe('alice');

    // A batch submitted now appears by itself (live polling) and its progress moves: its first 40
    // requests go out, then 40 more once the list has shown a count, then the rest.
    arrivals = 0;
    const openFirst = gate(40);
    const openSecond = gate(80);
    batchId = await submitBatch();
    const row = page.locator(`tr[data-id="${batchId}"]`);
    await row.waitFor({ timeout: 60_000 });
    await expect.poll(doneInList, { timeout: 60_000 }).toBeGreaterThan(0);
    const first = await doneInList();
    expect(first).toBeLessThanOrEqual(40);
    openFirst();
    // A list that stopped refreshing would stay at the first count.
    await expect.poll(doneInList, { timeout: 60_000 }).toBeGreaterThan(first);
    expect(await row.locator('.badge').textContent()).toBe('in progress');
    await page.screenshot({ path: `${ARTIFACTS}dashboard-batches.png` });
    openSecond();

    // Open it: counts, timeline and the throughput chart; wait for the batch to finish.
    await row.locator('a.batch-link').click();
    await page.waitForSelector('.stats .stat');
    expect(page.url()).toContain(`#/batches/${batchId}`);
    await expect
      .poll(() => page.locator('.title-row .badge').textContent(), { timeout: 60_000, interval: 500 })
      .toBe('completed');
    const stat = (label: string) =>
      page.locator('.stat', { has: page.locator('.stat-label', { hasText: label }) }).locator('.stat-value');
    await expect.poll(() => stat('Failed').textContent()).toBe(String(REFUSED));
    expect(await stat('Completed').textContent()).toBe(String(TOTAL - REFUSED));
    // The mock upstream reports 12 tokens per chat completion.
    await expect
      .poll(() => page.locator('.stat.ok .stat-hint').textContent())
      .toBe(`${((TOTAL - REFUSED) * 12).toLocaleString('en')} tokens`);
    expect(await page.locator('.timeline li').allTextContents()).toEqual(
      expect.arrayContaining([expect.stringContaining('Created'), expect.stringContaining('Completed')]),
    );
    expect(await page.locator('.chart-box svg.chart rect.seg-completed').count()).toBeGreaterThan(0);
    await page.screenshot({ path: `${ARTIFACTS}dashboard-batch.png`, fullPage: true });

    // Filter to failed requests and open one.
    await page.selectOption('#state-filter', 'failed');
    await expect
      .poll(async () => [...new Set(await page.locator('table.requests tbody .state').allTextContents())])
      .toEqual(['failed']);
    expect(await page.locator('table.requests tbody tr').count()).toBe(REFUSED);
    await page.fill('#custom-id-search', 'req-133');
    await expect.poll(() => page.locator('table.requests tbody tr').count()).toBe(1);
    await page.locator('table.requests tbody button.link').first().click();
    const viewer = page.locator('dialog.viewer');
    await viewer.waitFor();
    expect(await viewer.locator('h2').textContent()).toBe('req-133');
    expect(await viewer.locator('.tab-panel:not([hidden]) pre').textContent()).toContain(
      'temperature of request 133 is out of range',
    );
    await page.screenshot({ path: `${ARTIFACTS}dashboard-request.png` });
    await viewer.locator('[role=tab]', { hasText: 'Error' }).click();
    expect(await viewer.locator('.tab-panel:not([hidden]) pre').textContent()).toBe(
      'The upstream answered HTTP 400:\ntemperature of request 133 is out of range',
    );
    // The request tab shows the body as sent; Escape closes the viewer.
    await viewer.locator('[role=tab]', { hasText: 'Request' }).click();
    expect(await viewer.locator('.tab-panel:not([hidden]) pre').textContent()).toContain('question 133');
    await page.keyboard.press('Escape');
    await expect.poll(() => viewer.count()).toBe(0);
    // Keyboard users land back on the request they opened.
    expect(await page.evaluate('document.activeElement.textContent')).toBe('req-133');

    // Download the output file (fetched with the key, saved through a Blob link).
    const downloadPromise = page.waitForEvent('download');
    await page.getByRole('button', { name: '↓ Output' }).click();
    const download = await downloadPromise;
    expect(download.suggestedFilename()).toBe(`${batchId}_output.jsonl`);
    const output = (await readFile((await download.path())!, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(output).toHaveLength(TOTAL - REFUSED);
    const ids = new Set(output.map((o) => o.custom_id));
    expect(ids.size).toBe(TOTAL - REFUSED);
    expect(ids.has('req-133')).toBe(false);
    expect(ids.has('req-12')).toBe(true);
    for (const line of output) {
      expect(line.response.status_code).toBe(200);
      expect(line.error).toBeNull();
    }

    // The error file holds the refused requests with the upstream's answer.
    const errorsPromise = page.waitForEvent('download');
    await page.getByRole('button', { name: '↓ Errors' }).click();
    const errorLines = (await readFile((await (await errorsPromise).path())!, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(errorLines).toHaveLength(REFUSED);
    const line133 = errorLines.find((l) => l.custom_id === 'req-133');
    expect(line133.response.status_code).toBe(400);
    expect(JSON.stringify(line133.response.body)).toContain('temperature of request 133 is out of range');

    // Retry failed: a dialog says what failed; a 400 is not retriable, so "all" is the only choice,
    // and the completed batch is reopened only once that is confirmed. The refused requests are
    // sent again (and refused again).
    const sentBefore = mock.received;
    await page.getByRole('button', { name: `Retry failed (${REFUSED})` }).click();
    const retryDialog = page.locator('dialog.retry-dialog');
    await retryDialog.waitFor();
    expect(await retryDialog.locator('.breakdown tbody tr').allTextContents()).toEqual([
      `400${REFUSED}fails again`,
    ]);
    expect(await retryDialog.locator('input[value=retriable]').isDisabled()).toBe(true);
    await confirmRetry(page, REFUSED);
    await expect.poll(() => mock.received - sentBefore, { timeout: 30_000 }).toBe(REFUSED);
    await expect
      .poll(() => page.locator('.title-row .badge').textContent(), { timeout: 30_000, interval: 500 })
      .toBe('completed');
    await expect.poll(() => stat('Failed').textContent()).toBe(String(REFUSED));

    // Cancel a second batch from its page, after confirming in the app's dialog (not confirm()).
    const second = await submitBatch();
    await page.goto(`${server.url}/#/batches/${second}`);
    const nativeDialogs: string[] = [];
    page.on('dialog', (dialog) => {
      nativeDialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await page.getByRole('button', { name: 'Cancel batch' }).click();
    await page.locator('dialog.app-dialog').getByRole('button', { name: 'Cancel batch' }).click();
    await expect
      .poll(() => page.locator('.title-row .badge').textContent(), { timeout: 30_000, interval: 500 })
      .toBe('cancelled');
    expect(Number(await stat('Canceled').textContent())).toBeGreaterThan(0);
    expect(nativeDialogs).toEqual([]);

    // Operations: the model against its limit, the daemon, the queue.
    await page.getByRole('link', { name: 'Operations' }).click();
    await page.waitForSelector('.stats .stat');
    const modelRow = page.locator('tr', { has: page.locator('td', { hasText: 'gpt-dash' }) });
    await expect.poll(() => modelRow.locator('.meter-text').textContent()).toBe('0 / 3');
    await expect.poll(() => page.locator('.health-alive').count()).toBeGreaterThan(0);
    expect(await page.locator('.chart-box svg.chart polyline').count()).toBeGreaterThan(0);
    await page.screenshot({ path: `${ARTIFACTS}dashboard-operations.png`, fullPage: true });

    // Signing out forgets the key.
    await page.click('#signout');
    await page.waitForSelector('#api-key');
    expect(await page.evaluate('localStorage.getItem("fusillade.apiKey")')).toBeNull();
    expect(errors).toEqual([]);
  }, 120_000);
});
