import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 700_000 });

let dir: string;
let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-coalesce-'));
  db = await createTestDb({ max: 4 });
  mock = await startMockUpstream({ recordBodies: false });
});
afterAll(async () => {
  await mock?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Chat requests that reached the mock (run also checks the upstream is reachable). */
const sent = () => mock.requests.filter((r) => r.path === '/v1/chat/completions').length;

/** `n` lines over `distinct` bodies (custom ids line-0…). */
async function writeInput(path: string, n: number, distinct: number): Promise<void> {
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      custom_id: `line-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'gpt-test', messages: [{ role: 'user', content: `question ${i % distinct}` }] },
    }),
  );
  await writeFile(path, `${lines.join('\n')}\n`);
}

describe('fusillade run --coalesce', () => {
  it('sends each distinct body once and writes every line, with its own custom_id', async () => {
    const input = join(dir, 'dups.jsonl');
    const output = join(dir, 'dups.out.jsonl');
    await writeInput(input, 60, 6);
    mock.reset();
    const r = await runCli(
      [
        'run',
        input,
        '-o',
        output,
        '--coalesce',
        '--upstream',
        `${mock.url}/v1`,
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        db.schema,
      ],
      { timeoutMs: 600_000 },
    );
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.code).toBe(0);
    expect(sent()).toBe(6);
    const out = parseJsonl(await readFile(output, 'utf8'));
    expect(out.map((l) => String(l.custom_id)).sort()).toEqual(
      Array.from({ length: 60 }, (_, i) => `line-${i}`).sort(),
    );
    expect(new Set(out.map((l) => l.id)).size).toBe(60);
  });

  it('without the flag sends every line', async () => {
    const input = join(dir, 'plain.jsonl');
    await writeInput(input, 12, 3);
    mock.reset();
    const r = await runCli(
      [
        'run',
        input,
        '-o',
        join(dir, 'plain.out.jsonl'),
        '--upstream',
        `${mock.url}/v1`,
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        db.schema,
      ],
      { timeoutMs: 600_000 },
    );
    expect(r.code).toBe(0);
    expect(sent()).toBe(12);
  });
});
