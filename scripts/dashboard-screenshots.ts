/**
 * The README's dashboard screenshots (docs/dashboard.png at 1280×800, docs/dashboard-phone.png at
 * 390×844): a batch with failures, shown by the real server in Debian's Chromium (the same set-up
 * as the dashboard's end-to-end tests). Needs the test PostgreSQL (TEST_DATABASE_URL).
 *   npm run docs:screenshots
 */
import { startMockUpstream } from '../src/mock-upstream/server.js';
import { createServer } from '../src/server/server.js';
import { createApiKey } from '../src/store/api-keys.js';
import { launchChromium, signIn, submitBatch } from '../test/dashboard/browser.js';
import { createTestDb } from '../test/support/db.js';

const LINES = 600;
const DOCS = new URL('../docs/', import.meta.url).pathname;

const db = await createTestDb();
const mock = await startMockUpstream({ recordBodies: false });
// Answers take 40–160 ms; about one line in twelve is refused (400) and one in fifteen unavailable (503).
mock.setBehaviour((req) => {
  const i = Number(req.customId?.replace('req-', ''));
  const delayMs = 40 + ((i * 37) % 120);
  if (i % 12 === 5)
    return { kind: 'status', status: 400, delayMs, body: { error: { message: 'max_tokens is too large' } } };
  if (i % 15 === 7)
    return { kind: 'status', status: 503, delayMs, body: { error: { message: 'overloaded' } } };
  return { kind: 'ok', delayMs };
});
const server = await createServer({
  pool: db.pool,
  schema: db.schema,
  port: 0,
  routing: { upstream: `${mock.url}/v1`, models: { 'gpt-4o-mini': { limit: 16 } } },
  daemonConfig: { pollIntervalMs: 100, maxRetries: 0 },
});
const browser = await launchChromium(() => server.url, { width: 1280, height: 800 });
try {
  const { key } = await createApiKey(db.pool, server.manager.schema, { owner: 'research' });
  const id = await submitBatch(server.url, key, LINES, 'gpt-4o-mini', { project: 'eval-2026-12', run: '7' });
  const { page } = browser;
  await signIn(page, server.url, key);
  await page.goto(`${server.url}/#/batches/${id}?state=failed`);
  await page.locator('.title-row .badge', { hasText: 'completed' }).waitFor({ timeout: 120_000 });
  await page.locator('.code-chip').first().waitFor();
  await page.screenshot({ path: `${DOCS}dashboard.png` });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await page.locator('.code-chip').first().waitFor();
  await page.screenshot({ path: `${DOCS}dashboard-phone.png` });
  console.log(`wrote ${DOCS}dashboard.png and ${DOCS}dashboard-phone.png`);
} finally {
  await browser.close();
  await server.close();
  await mock.close();
  await db.close();
}
