import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli, startCli, waitFor, writeBatchInput } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let dir: string;
let db: TestDb;
let serve: ReturnType<typeof startCli>;
let server = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-serve-'));
  db = await createTestDb();
  serve = startCli([
    'serve',
    '--port',
    '0',
    '--upstream',
    'mock',
    '--database-url',
    TEST_DATABASE_URL,
    '--schema',
    db.schema,
    '--metrics-token',
    'mt-cli-secret',
  ]);
  await waitFor(() => /Batch API on (http:\/\/\S+)\/v1/.test(serve.output().stdout), 110_000);
  server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
});
afterAll(async () => {
  if (serve.exitCode === null) serve.kill('SIGKILL');
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

const dbArgs = () => ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];

describe('fusillade serve --metrics-token', () => {
  it('serves /metrics only with the token; /healthz stays open', async () => {
    expect((await fetch(`${server}/metrics`)).status).toBe(401);
    const wrong = await fetch(`${server}/metrics`, { headers: { authorization: 'Bearer mt-cli-secreT' } });
    expect(wrong.status).toBe(401);
    const ok = await fetch(`${server}/metrics`, { headers: { authorization: 'Bearer mt-cli-secret' } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('# TYPE ');
    expect((await fetch(`${server}/healthz`)).status).toBe(200);
  });
});

describe('fusillade serve with the client commands', () => {
  let apiKey = '';
  let batchId = '';

  it('keys create prints the key as the last line; keys list shows its prefix only', async () => {
    const created = await runCli(['keys', 'create', '--owner', 'alice', ...dbArgs()]);
    expect(created.code).toBe(0);
    apiKey = created.stdout.trim().split('\n').pop()!;
    expect(apiKey).toMatch(/^fsk_/);
    const list = await runCli(['keys', 'list', ...dbArgs()]);
    expect(list.stdout).toContain('alice');
    expect(list.stdout).toContain(apiKey.slice(0, 12));
    expect(list.stdout).not.toContain(apiKey);
  });

  it('submit --wait shows progress, waits for completion and downloads the output', async () => {
    const input = join(dir, 'in.jsonl');
    const output = join(dir, 'out.jsonl');
    await writeBatchInput(input, 40);
    const r = await runCli(['submit', input, '--wait', '-o', output], {
      env: { FUSILLADE_SERVER: server, FUSILLADE_API_KEY: apiKey },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/progress: 40\/40 {2}100\.0% {2}0 failed/);
    batchId = /submitted .* as batch (\S+)/.exec(r.stdout)![1]!;
    expect(r.stdout).toMatch(new RegExp(`${batchId} completed: 40 succeeded, 0 failed → `));
    const lines = parseJsonl(await readFile(output, 'utf8'));
    expect(lines).toHaveLength(40);
    expect(lines[0]).toMatchObject({ response: { status_code: 200 }, error: null });
  });

  it('status, results and cancel talk to the same server', async () => {
    const env = { FUSILLADE_SERVER: server, FUSILLADE_API_KEY: apiKey };
    const one = await runCli(['status', batchId], { env });
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(new RegExp(`${batchId} {2}completed {2}40/40 done, 0 failed`));
    const list = await runCli(['status'], { env });
    expect(list.stdout).toContain(batchId);
    const again = join(dir, 'again.jsonl');
    const results = await runCli(['results', batchId, '-o', again], { env });
    expect(results.code).toBe(0);
    expect(parseJsonl(await readFile(again, 'utf8'))).toHaveLength(40);
    const cancel = await runCli(['cancel', batchId], { env });
    expect(cancel.code).toBe(1); // a finished batch cannot be cancelled
    expect(cancel.stderr).toMatch(/^fusillade: server answered 400: /);
    const stranger = await runCli(['status', batchId], {
      env: { ...env, FUSILLADE_API_KEY: 'fsk_not-a-key' },
    });
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/server answered 401/);
  });

  it('stops cleanly on SIGTERM', async () => {
    serve.kill('SIGTERM');
    const r = await serve.exited;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/SIGTERM, shutting down/);
  });
});
