import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli, startCli, waitFor, writeBatchInput } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let dir: string;
let db: TestDb;
let mock: MockUpstream;
const children: ReturnType<typeof startCli>[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-daemon-'));
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await mock.close();
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

describe('serve --no-daemon with a separate `fusillade daemon`', () => {
  it('the API queues the batch, and only the daemon process sends it, with the upstream key from the environment', async () => {
    const dbArgs = ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];
    // The server routes by model (it refuses models with no upstream) and records each batch's
    // upstream and key fingerprint; the daemon sends, with the same key from its environment.
    const upstreamEnv = { FUSILLADE_UPSTREAM_API_KEY: 'sk-upstream-from-env' };
    const serve = startCli(['serve', '--port', '0', '--no-daemon', '--upstream', mock.url, ...dbArgs], {
      env: upstreamEnv,
    });
    children.push(serve);
    await waitFor(() => serve.output().stdout.includes('Ctrl-C stops'), 30_000);
    expect(serve.output().stdout).toContain('daemon off (--no-daemon)');
    const server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
    const key = (await runCli(['keys', 'create', '--owner', 'ops', ...dbArgs])).stdout
      .trim()
      .split('\n')
      .pop()!;
    const env = { FUSILLADE_SERVER: server, FUSILLADE_API_KEY: key };

    const input = join(dir, 'in.jsonl');
    await writeBatchInput(input, 20);
    const submitted = await runCli(['submit', input], { env });
    expect(submitted.stderr).toBe('');
    expect(submitted.code).toBe(0);
    const batchId = submitted.stdout.trim().split('\n').pop()!;
    await new Promise((r) => setTimeout(r, 1000));
    expect(mock.received).toBe(0); // nobody sends: no daemon yet

    const daemon = startCli(['daemon', '--upstream', mock.url, ...dbArgs], { env: upstreamEnv });
    children.push(daemon);
    const output = join(dir, 'out.jsonl');
    const waited = await runCli(['submit', input, '--wait', '-o', output], { env });
    expect(waited.code).toBe(0);
    expect(parseJsonl(await readFile(output, 'utf8'))).toHaveLength(20);
    const first = await runCli(['status', batchId], { env });
    expect(first.stdout).toMatch(/completed {2}20\/20 done/);
    expect(mock.requests.filter((r) => r.customId !== null)).toHaveLength(40);
    expect(
      mock.requests.every(
        (r) => r.customId === null || r.headers.authorization === 'Bearer sk-upstream-from-env',
      ),
    ).toBe(true);

    daemon.kill('SIGTERM');
    const stopped = await daemon.exited;
    expect(stopped.code).toBe(0);
    expect(stopped.stderr).toMatch(/SIGTERM, handing in-flight requests back/);
    expect(stopped.stderr).not.toContain('sk-upstream-from-env');
    serve.kill('SIGINT');
    expect((await serve.exited).code).toBe(0);
  });
});
