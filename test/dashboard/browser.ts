import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { expect } from 'vitest';

/**
 * Debian's Chromium driven by playwright-core (never a downloaded browser), for the dashboard's
 * end-to-end tests and the README's screenshots.
 */
export const CHROMIUM = '/usr/bin/chromium';
export const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url).pathname;

export interface Browser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

/** A headless Chromium whose pages may call nothing but `origin`. */
export async function launchChromium(
  origin: () => string,
  viewport = { width: 1440, height: 900 },
): Promise<Browser> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'fusillade-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport,
    acceptDownloads: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  await context.route('**/*', (route) =>
    route.request().url().startsWith(origin()) ? route.continue() : route.abort('blockedbyclient'),
  );
  return {
    context,
    page,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Signs in through the form and waits for the batches list. */
export async function signIn(page: Page, url: string, key: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.fill('#api-key', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('table.batches');
}

/** Creates a batch of `n` chat completions for `model` through the official client; its id. */
export async function submitBatch(
  url: string,
  key: string,
  n: number,
  model: string,
  metadata: Record<string, string> = {},
): Promise<string> {
  const client = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0 });
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      custom_id: `req-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model, messages: [{ role: 'user', content: `question ${i}` }] },
    }),
  );
  const file = await client.files.create({
    file: await toFile(Buffer.from(lines.join('\n')), 'questions.jsonl'),
    purpose: 'batch',
  });
  const batch = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata,
  });
  return batch.id;
}

/**
 * In the open retry dialog of a completed batch: the confirm button for `count` requests waits
 * for the reopen box; ticks it, confirms, and waits for the notice.
 */
export async function confirmRetry(page: Page, count: number): Promise<void> {
  const dialog = page.locator('dialog.retry-dialog');
  const confirm = dialog.getByRole('button', { name: `Retry ${count} requests` });
  expect(await confirm.isDisabled()).toBe(true);
  await dialog.locator('#retry-reopen').check();
  await confirm.click();
  await expect
    .poll(() => page.locator('#toast').textContent())
    .toBe(`${count} failed requests queued again; the batch is open again`);
}

/** The page scrolls sideways: its content is wider than the window. */
export function scrollsSideways(page: Page): Promise<boolean> {
  return page.evaluate<boolean>('document.documentElement.scrollWidth > window.innerWidth');
}

/**
 * Text below WCAG AA contrast (4.5:1; 3:1 for large text) against its nearest opaque background:
 * one "text — ratio" entry per element with its own visible text. Disabled controls are exempt.
 * (Browser-side JavaScript, as text: this project's Node type check has no DOM types.)
 */
export function lowContrastText(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(`(() => {
    const rgba = (c) => {
      const m = c.match(/rgba?\\(([^)]+)\\)/);
      if (!m) return null;
      const [r = 0, g = 0, b = 0, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const lum = ({ r, g, b }) => {
      const f = (v) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgba(getComputedStyle(e).backgroundColor);
        if (c && c.a >= 0.99) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const found = [];
    for (const el of document.querySelectorAll('body *')) {
      if (el.closest('svg, [hidden], .visually-hidden, :disabled, .skip-link, .toast')) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      const box = el.getBoundingClientRect();
      if (box.width === 0 || box.height === 0) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || Number(style.opacity) < 0.5) continue;
      const fg = rgba(style.color);
      if (!fg) continue;
      const a = lum(fg);
      const b = lum(background(el));
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const size = Number.parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) found.push(el.textContent.trim().slice(0, 40) + ' — ' + ratio.toFixed(2));
    }
    return found;
  })()`);
}
