import type { RequestTemplateInput } from '../../src/domain/templates.js';
import type { CreateBatchOptions } from '../../src/domain/types.js';
import type { PostgresRequestManager } from '../../src/manager/request-manager.js';
import type { MockUpstream } from '../../src/mock-upstream/server.js';

/** `n` chat templates aimed at the mock; custom ids `${prefix}${i}`. */
export function mockTemplates(
  mock: MockUpstream,
  n: number,
  options: { model?: string; prefix?: string; path?: string; apiKey?: string } = {},
): RequestTemplateInput[] {
  const model = options.model ?? 'gpt-mock';
  return Array.from({ length: n }, (_, i) => ({
    endpoint: mock.url,
    method: 'POST',
    path: options.path ?? '/v1/chat/completions',
    body: JSON.stringify({ model, messages: [{ role: 'user', content: `hello ${i}` }] }),
    model,
    apiKey: options.apiKey ?? 'sk-upstream-secret',
    customId: `${options.prefix ?? 'req-'}${i}`,
  }));
}

/** Creates a file and a batch from templates; returns the batch id. */
export async function createBatch(
  manager: PostgresRequestManager,
  templates: RequestTemplateInput[],
  options: CreateBatchOptions = {},
): Promise<string> {
  const fileId = await manager.createFile('input.jsonl', null, templates);
  return manager.createBatch(fileId, options);
}

/**
 * A wait's deadline only turns a hang into a failure; it is never a speed assertion (the suite must
 * pass on a loaded 2-core machine, where anything may take many times longer). Shorter deadlines
 * given by callers are raised to this.
 */
const MIN_WAIT_MS = 60_000;

/** Polls until `check` returns a truthy value; fails after the timeout (at least MIN_WAIT_MS). */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  timeoutMs = MIN_WAIT_MS,
  stepMs = 20,
): Promise<NonNullable<T>> {
  const limit = Math.max(timeoutMs, MIN_WAIT_MS);
  const deadline = Date.now() + limit;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`condition not met within ${limit} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Waits until the batch has ended (finished_at set) and returns its status. */
export async function waitForBatchEnd(
  manager: PostgresRequestManager,
  batchId: string,
  timeoutMs = MIN_WAIT_MS,
) {
  return waitFor(async () => {
    const status = await manager.getBatchStatus(batchId);
    return status.finishedAt !== null ? status : null;
  }, timeoutMs);
}

/** A log sink that keeps entries in memory (and lets tests assert no secret leaks). */
export function memoryLogger() {
  const entries: Record<string, unknown>[] = [];
  return { entries, logger: (e: Record<string, unknown>) => void entries.push(e) };
}
