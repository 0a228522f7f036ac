import { mkdirSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createServer, type FusilladeServer, type ServerOptions } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { createTestDb, type TestDb } from '../support/db.js';
import {
  ARTIFACTS,
  type Browser,
  confirmRetry,
  launchChromium,
  lowContrastText,
  scrollsSideways,
  signIn,
  submitBatch,
} from './browser.js';

/**
 * The dashboard for people watching big batches (issue 20), in Debian's Chromium: triage and view
 * state in the URL, retry as a deliberate act, honest progress of a cancelled batch, the phone
 * layout, contrast, and the outage banner.
 */

const TOTAL = 200;
/** Line i of the "gpt-ui" batch: every 10th from 3 refused (400), every 10th from 7 unavailable (503). */
const outcome = (i: number) => (i % 10 === 3 ? 400 : i % 10 === 7 ? 503 : 200);
const REFUSED = 20;
const UNAVAILABLE = 20;

let db: TestDb;
let mock: MockUpstream;
let server: FusilladeServer;
let options: ServerOptions;
let browser: Browser;
let page: Page;
let key: string;
let failing: string;
let slow: string;

/**
 * The cancel test's slow batch sends 3 requests, then holds the next at the mock until the test
 * has cancelled it: the batch is still running when the test cancels however slowly a loaded
 * machine drives the browser (its 15 s at a quiet machine's pace could end first).
 */
let slowArrivals = 0;
let openSlow = () => {};
const slowOpened = new Promise<void>((resolve) => {
  openSlow = resolve;
});
afterEach(() => openSlow());

const statusOf = async (id: string) =>
  (
    (await (
      await fetch(`${server.url}/v1/batches/${id}`, { headers: { authorization: `Bearer ${key}` } })
    ).json()) as {
      status: string;
    }
  ).status;

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  db = await createTestDb();
  mock = await startMockUpstream({ recordBodies: false });
  const slowOk = { kind: 'ok', delayMs: 150 } as const;
  mock.setBehaviour((req) => {
    if (req.model === 'gpt-slow') return ++slowArrivals > 3 ? slowOpened.then(() => slowOk) : slowOk;
    const status = outcome(Number(req.customId?.replace('req-', '')));
    return status === 200
      ? { kind: 'ok', delayMs: 2 }
      : { kind: 'status', status, body: { error: { message: `no ${status}`, type: 'server_error' } } };
  });
  options = {
    pool: db.pool,
    schema: db.schema,
    port: 0,
    routing: {
      upstream: `${mock.url}/v1`,
      models: { 'gpt-ui': { limit: 20 }, 'gpt-slow': { limit: 1 } },
    },
    // No retries: a 503 fails at once, so the batch ends with both kinds of failure.
    daemonConfig: { pollIntervalMs: 100, maxRetries: 0 },
    modelPrices: { 'gpt-ui': { input: 1000, output: 3000 } },
  };
  server = await createServer(options);
  key = (await createApiKey(db.pool, server.manager.schema, { owner: 'bob' })).key;
  failing = await submitBatch(server.url, key, TOTAL, 'gpt-ui', { purpose: 'triage' });
  // Waits for the batch to end (a condition, checked every 250 ms).
  while ((await statusOf(failing)) !== 'completed') await new Promise((r) => setTimeout(r, 250));
  browser = await launchChromium(() => server.url, { width: 1280, height: 800 });
  page = browser.page;
  await signIn(page, server.url, key);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await mock?.close();
  await db?.close();
});

/** Waits for a condition (60 s at most unless told: a hang guard, the machine may be loaded). */
const until = <T>(fn: () => T | Promise<T>, options: { timeout?: number; interval?: number } = {}) =>
  expect.poll(fn, { timeout: 60_000, ...options });

const rows = () => page.locator('table.requests tbody tr[data-line]');
const lines = async () =>
  await rows().evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute('data-line'))));
const statuses = async () =>
  [...new Set(await page.locator('table.requests tbody td .code').allTextContents())].sort();
const hashQuery = () => new URLSearchParams(new URL(page.url()).hash.split('?')[1] ?? '');
const stat = (label: string) =>
  page.locator('.stat', { has: page.locator('.stat-label', { hasText: label }) });

describe('dashboard for big batches', () => {
  it('keeps the view in the URL and triages failures by state, code, sort, page size and line', async () => {
    await page.goto(`${server.url}/#/batches/${failing}?state=failed`);
    await until(statuses).toEqual(['400', '503']);
    expect(await rows().count()).toBe(25);
    expect(await page.locator('.requests-card .card-head .muted').textContent()).toMatch(
      new RegExp(`^${REFUSED + UNAVAILABLE} matching · lines `),
    );
    // Counts in the state filter.
    expect(await page.locator('#state-filter option[value=failed]').textContent()).toBe(
      `failed (${REFUSED + UNAVAILABLE})`,
    );
    expect(await page.locator('#state-filter option[value=completed]').textContent()).toBe(
      `completed (${TOTAL - REFUSED - UNAVAILABLE})`,
    );

    // The cost at the configured prices.
    expect(Number(await stat('Cost').locator('.stat-value').textContent())).toBeGreaterThan(0);

    // A reload keeps the failed filter.
    await page.reload();
    await until(statuses).toEqual(['400', '503']);
    expect(await page.locator('#state-filter').inputValue()).toBe('failed');

    // Failures by code: one click filters to a code, Back undoes it, Forward redoes it.
    const chip = (code: string) => page.locator(`.code-chip[data-code="${code}"]`);
    await until(() => chip('503').textContent()).toBe(`503${UNAVAILABLE}retriable`);
    expect(await chip('400').textContent()).toBe(`400${REFUSED}`);
    await chip('503').click();
    await until(statuses).toEqual(['503']);
    expect(hashQuery().get('code')).toBe('503');
    expect(await rows().count()).toBe(UNAVAILABLE);
    expect(await chip('503').getAttribute('aria-pressed')).toBe('true');
    await page.goBack();
    await until(statuses).toEqual(['400', '503']);
    expect(hashQuery().get('code')).toBeNull();
    await page.goForward();
    await until(statuses).toEqual(['503']);

    // All states, 50 rows a page, then the slowest first.
    await page.selectOption('#state-filter', '');
    await until(() => hashQuery().get('state')).toBeNull();
    expect(hashQuery().get('code')).toBeNull(); // a code is a kind of failure: another state drops it
    await until(() => rows().count()).toBe(25);
    await page.selectOption('#page-size', '50');
    await until(() => rows().count()).toBe(50);
    expect(await page.locator('.requests-card .card-head .muted').textContent()).toBe(
      `${TOTAL} requests · lines 1–50`,
    );
    await page.selectOption('#sort', 'latency');
    await until(() => page.locator('.requests-card .card-head .muted').textContent()).toBe(
      `${TOTAL} requests · rows 1–50`,
    );
    expect(hashQuery().get('sort')).toBe('latency');

    // Jump to a line (in line order), then page on: the view is in the URL and scrolled to the table.
    await page.fill('#jump-line', '150');
    await page.click('.jump button[type=submit]');
    await until(async () => (await lines())[0]).toBe(150);
    expect(hashQuery().get('line')).toBe('150');
    expect(hashQuery().get('sort')).toBeNull();
    await page.evaluate('window.scrollTo(0, document.body.scrollHeight)');
    await page.getByRole('button', { name: 'Next →' }).click();
    await until(async () => (await lines())[0]).toBe(200);
    await until(() =>
      page.locator('.requests-card').evaluate((el) => el.getBoundingClientRect().top),
    ).toBeGreaterThanOrEqual(0);
    await page.getByRole('button', { name: '← Previous' }).click();
    await until(async () => (await lines())[0]).toBe(150);

    // The list's filters are in its URL too.
    await page.getByRole('link', { name: 'Batches', exact: true }).first().click();
    await page.selectOption('#status-filter', 'completed');
    await until(() => hashQuery().get('status')).toBe('completed');
    await page.reload();
    await page.waitForSelector(`tr[data-id="${failing}"]`);
    expect(await page.locator('#status-filter').inputValue()).toBe('completed');
    expect(await page.locator('.page-head .count').textContent()).toBe('1–1 of 1');

    // Freshness is always on screen.
    expect(await page.locator('#freshness').textContent()).toMatch(/^updated \d+ s ago$/);
  }, 120_000);

  it('retries through a dialog: the breakdown, only the retriable, reopening confirmed', async () => {
    await page.goto(`${server.url}/#/batches/${failing}`);
    const sentBefore = mock.received;
    await page.getByRole('button', { name: `Retry failed (${REFUSED + UNAVAILABLE})` }).click();
    const dialog = page.locator('dialog.retry-dialog');
    await dialog.waitFor();
    expect(await dialog.locator('.breakdown tbody tr').allTextContents()).toEqual(
      expect.arrayContaining([`400${REFUSED}fails again`, `503${UNAVAILABLE}may succeed`]),
    );
    expect(await dialog.locator('input[value=retriable]').isChecked()).toBe(true);
    await page.screenshot({ path: `${ARTIFACTS}dashboard-retry-dialog.png` });
    // The batch has completed: retrying reopens it, which must be ticked first.
    await confirmRetry(page, UNAVAILABLE);
    // Only the 503s go again (and fail again); the 400s stay as they were.
    await until(() => mock.received - sentBefore).toBe(UNAVAILABLE);
    await until(() => page.locator('.title-row .badge').textContent()).toBe('completed');
    await until(() => stat('Failed').locator('.stat-hint').textContent()).toBe(
      `${UNAVAILABLE} retried so far`,
    );
    await until(() => stat('Failed').locator('.stat-value').textContent()).toBe(
      String(REFUSED + UNAVAILABLE),
    );
    // The chart keeps the failures a retry put behind.
    expect(await page.locator('.chart-box svg.chart rect.seg-failed').count()).toBeGreaterThan(0);
    // A retried request shows the failure a retry put behind it.
    await page.selectOption('#state-filter', 'failed');
    await page.locator('.code-chip[data-code="503"]').click();
    await until(statuses).toEqual(['503']);
    await page.locator('table.requests tbody button.link').first().click();
    const viewer = page.locator('dialog.viewer');
    await viewer.locator('[role=tab]', { hasText: 'Earlier failures (1)' }).click();
    expect(await viewer.locator('.tab-panel:not([hidden]) pre').textContent()).toMatch(
      /^Attempt 1 · HTTP 503 · failed /,
    );
    await page.keyboard.press('Escape');
  }, 120_000);

  it('shows a cancelled batch as what ran and what was canceled, canceled apart from failed', async () => {
    slow = await submitBatch(server.url, key, 100, 'gpt-slow', { purpose: 'cancel' });
    await page.goto(`${server.url}/#/batches/${slow}`);
    await until(async () =>
      Number(await stat('Completed').locator('.stat-value').textContent()),
    ).toBeGreaterThan(0);
    const native: string[] = [];
    page.on('dialog', (d) => {
      native.push(d.message());
      void d.dismiss();
    });
    await page.getByRole('button', { name: 'Cancel batch' }).click();
    const dialog = page.locator('dialog.app-dialog');
    // Backing out keeps it running.
    await dialog.getByRole('button', { name: 'Keep running' }).click();
    await until(() => dialog.count()).toBe(0);
    expect(await statusOf(slow)).toBe('in_progress');
    await page.getByRole('button', { name: 'Cancel batch' }).click();
    await dialog.getByRole('button', { name: 'Cancel batch' }).click();
    await until(async () => await statusOf(slow)).not.toBe('in_progress');
    openSlow();
    await until(() => page.locator('.title-row .badge').textContent()).toBe('cancelled');
    expect(native).toEqual([]);
    const hint = await stat('Total').locator('.stat-hint').textContent();
    const [, done, canceled] = hint!.match(/^(\d+) done · (\d+) canceled$/) ?? [];
    expect(Number(done) + Number(canceled)).toBe(100);
    expect(Number(canceled)).toBeGreaterThan(0);
    expect(await stat('ETA').locator('.stat-hint').textContent()).toMatch(/^cancelled after /);
    // Canceled requests read as such, not as upstream errors.
    await page.selectOption('#state-filter', 'canceled');
    await until(() => page.locator('table.requests tbody .code-ended').count()).toBeGreaterThan(0);
    expect(await page.locator('table.requests tbody .code-x, table.requests tbody .code-4xx').count()).toBe(
      0,
    );
    // The list says the same.
    await page.goto(`${server.url}/#/batches`);
    expect(await page.locator(`tr[data-id="${slow}"] .counts`).textContent()).toBe(
      `${done} done· ${canceled} canceled`,
    );
  }, 120_000);

  it('meets WCAG AA contrast for text on every page', async () => {
    for (const hash of ['#/batches', `#/batches/${failing}?state=failed`, '#/operations']) {
      await page.goto(`${server.url}/${hash}`);
      await page.waitForSelector('.stats .stat, table.batches tbody tr[data-id]');
      await until(() => page.locator('#freshness').textContent()).toMatch(/^updated/);
      expect(await lowContrastText(page)).toEqual([]);
    }
  });

  it('fits a phone: no sideways scroll on any page at 390×844 (and 360), dialogs inside the screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const pages: [string, string][] = [
      ['list', '#/batches'],
      ['batch', `#/batches/${failing}`],
      ['batch-failed', `#/batches/${failing}?state=failed`],
      ['cancelled', `#/batches/${slow}`],
      ['operations', '#/operations'],
    ];
    const inside = async (selector: string) => {
      const box = (await page.locator(selector).first().boundingBox())!;
      return box.x >= 0 && box.y >= 0 && box.x + box.width <= 390 && box.y + box.height <= 844;
    };
    for (const [name, hash] of pages) {
      await page.goto(`${server.url}/${hash}`);
      await page.waitForSelector('.stats .stat, table.batches tbody tr[data-id]');
      await until(() => page.locator('#freshness').textContent()).toMatch(/^updated/);
      expect(await scrollsSideways(page), name).toBe(false);
      expect(await inside('#signout'), `${name}: Sign out on screen`).toBe(true);
      expect(await inside('#freshness'), `${name}: freshness on screen`).toBe(true);
      await page.screenshot({ path: `${ARTIFACTS}dashboard-phone-${name}.png`, fullPage: true });
    }
    // List rows are cards: the progress sits under the id, not in a column off-screen.
    await page.goto(`${server.url}/#/batches`);
    const card = page.locator(`tr[data-id="${failing}"]`);
    await card.waitFor();
    expect(await card.evaluate((tr) => tr.ownerDocument.defaultView!.getComputedStyle(tr).display)).toBe(
      'grid',
    );
    expect(await inside(`tr[data-id="${failing}"] .progress`)).toBe(true);

    // The request viewer and the retry dialog fit the screen.
    await page.goto(`${server.url}/#/batches/${failing}?state=failed`);
    await page.locator('table.requests tbody button.link').first().click();
    await page.locator('dialog.viewer').waitFor();
    expect(await inside('dialog.viewer')).toBe(true);
    expect(await inside('dialog.viewer .close')).toBe(true);
    expect(await scrollsSideways(page)).toBe(false);
    await page.keyboard.press('Escape');
    await page.getByRole('button', { name: /^Retry failed/ }).click();
    await page.locator('dialog.retry-dialog').waitFor();
    expect(await inside('dialog.retry-dialog')).toBe(true);
    expect(await scrollsSideways(page)).toBe(false);
    await page.keyboard.press('Escape');

    await page.setViewportSize({ width: 360, height: 740 });
    for (const [name, hash] of pages) {
      await page.goto(`${server.url}/${hash}`);
      await page.waitForSelector('.stats .stat, table.batches tbody tr[data-id]');
      expect(await scrollsSideways(page), `${name} at 360`).toBe(false);
    }
    await page.setViewportSize({ width: 1280, height: 800 });
  }, 120_000);

  // The banner shows at the first poll that fails (app.js: failingSince); how soon that poll comes is
  // the page's poll interval on a quiet machine, and a loaded one's scheduling here, so the wait is
  // the suite's condition deadline (5 s was a speed check). A page that never shows it still fails.
  it('shows a persistent outage banner at the first failed poll after the server stops, keeping the last data', async () => {
    await page.goto(`${server.url}/#/batches/${failing}`);
    await until(() => stat('Failed').locator('.stat-value').textContent()).toBe(
      String(REFUSED + UNAVAILABLE),
    );
    await until(() => page.locator('#freshness').textContent()).toMatch(/^updated/);
    const port = Number(new URL(server.url).port);
    await server.close();
    const banner = page.locator('#outage');
    await until(() => banner.isVisible(), { interval: 100 }).toBe(true);
    expect(await banner.textContent()).toMatch(/The data shown is from .+ \(\d+ s ago\)\.$/);
    // The last data stays on screen, marked stale.
    expect(await page.locator('.title-row h1').textContent()).toBe(failing);
    expect(await stat('Failed').locator('.stat-value').textContent()).toBe(String(REFUSED + UNAVAILABLE));
    expect(await page.locator('#freshness').getAttribute('class')).toContain('stale');
    await page.screenshot({ path: `${ARTIFACTS}dashboard-outage.png` });
    // A page opened during the outage says it cannot load, instead of an empty list.
    await page.getByRole('link', { name: 'Batches', exact: true }).first().click();
    await until(() => page.locator('table.batches td.empty').textContent()).toMatch(/^Cannot load batches: /);
    expect(await page.getByRole('button', { name: 'Older →' }).isDisabled()).toBe(true);
    expect(await page.getByRole('button', { name: '← Newer' }).isDisabled()).toBe(true);
    await until(() => banner.textContent()).toMatch(/Nothing has loaded yet\.$/);
    // Back again: the banner goes.
    server = await createServer({ ...options, port });
    await until(() => banner.isVisible()).toBe(false);
    await page.waitForSelector(`tr[data-id="${failing}"]`);
    expect(await page.locator('#freshness').getAttribute('class')).not.toContain('stale');
  });
});
