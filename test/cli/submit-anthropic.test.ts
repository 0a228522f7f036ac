import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli, startCli, waitFor } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let dir: string;
let db: TestDb;
let serve: ReturnType<typeof startCli>;
let env: Record<string, string>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-anthropic-'));
  db = await createTestDb();
  const dbArgs = ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];
  serve = startCli(['serve', '--port', '0', '--upstream', 'mock', ...dbArgs]);
  await waitFor(() => /Batch API on (http:\/\/\S+)\/v1/.test(serve.output().stdout), 30_000);
  const server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
  const created = await runCli(['keys', 'create', '--owner', 'alice', ...dbArgs]);
  env = { FUSILLADE_SERVER: server, FUSILLADE_API_KEY: created.stdout.trim().split('\n').pop()! };
});
afterAll(async () => {
  if (serve && serve.exitCode === null) serve.kill('SIGKILL');
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

const line = (i: number) =>
  JSON.stringify({
    custom_id: `m-${i}`,
    params: { model: 'claude-test', max_tokens: 32, messages: [{ role: 'user', content: `hi ${i}` }] },
  });

describe('fusillade submit --format anthropic', () => {
  it('submits a Message Batch, waits, writes the results; status, results and cancel know msgbatch ids', async () => {
    const input = join(dir, 'messages.jsonl');
    const output = join(dir, 'results.jsonl');
    await writeFile(input, `${Array.from({ length: 12 }, (_, i) => line(i)).join('\n')}\n`);
    const r = await runCli(['submit', '--format', 'anthropic', input, '--wait', '-o', output], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /submitted .* as message batch (msgbatch_[0-9a-f]{32}) \(12 requests\)/.exec(r.stdout)![1]!;
    expect(r.stdout).toContain(`${id} ended: 12 succeeded, 0 errored, 0 canceled, 0 expired → ${output}`);
    const results = parseJsonl(await readFile(output, 'utf8'));
    expect(results.map((l) => l.custom_id).sort()).toEqual(
      Array.from({ length: 12 }, (_, i) => `m-${i}`).sort(),
    );
    expect(results[0]).toMatchObject({ result: { type: 'succeeded', message: { type: 'message' } } });

    // Beside the OpenAI batches: the list shows it by its msgbatch id, status takes that id.
    const list = await runCli(['status'], { env });
    expect(list.stdout).toContain(id);
    const one = await runCli(['status', id], { env });
    expect(one.stdout).toMatch(new RegExp(`^${id} {2}completed {2}12/12 done, 0 failed`));
    expect(one.stdout).toContain('endpoint /v1/messages');
    const again = join(dir, 'again.jsonl');
    const res = await runCli(['results', id, '-o', again], { env });
    expect(res.code).toBe(0);
    expect(parseJsonl(await readFile(again, 'utf8'))).toHaveLength(12);
    const cancel = await runCli(['cancel', id], { env });
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toMatch(/^fusillade: server answered 400: /);
  });

  it('refuses a bad line locally with its line number, sending nothing', async () => {
    const input = join(dir, 'bad.jsonl');
    await writeFile(input, `${line(1)}\n\n${JSON.stringify({ custom_id: 'bad id', params: {} })}\n`);
    const r = await runCli(['submit', '--format', 'anthropic', input], { env });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('line 3: custom_id:');
    const list = await runCli(['status'], { env });
    expect(list.stdout.trim().split('\n')).toHaveLength(2); // the header and the first test's batch
  });
});
