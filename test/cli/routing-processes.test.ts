import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stopEmbeddedServer } from '../../src/embedded/embedded-postgres.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli, startCli, waitFor, writeBatchInput } from './support/cli.js';

/**
 * Issue 18's reproductions as processes: `fusillade run` next to a running `fusillade serve
 * --upstream mock` in the same directory (one embedded database), and a `fusillade daemon` with
 * another --upstream on the database of a `serve`. Before routes were recorded per request, the
 * serve's daemon claimed 2,791 of the run's 3,000 lines and answered them from the built-in mock.
 */

vi.setConfig({ testTimeout: 300_000 });

let dir: string;
let mock: MockUpstream;
let db: TestDb;
const children: ReturnType<typeof startCli>[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-routing-'));
  await chmod(dir, 0o755); // as root, the postgres account must reach the data directory
  mock = await startMockUpstream({ recordBodies: false });
  db = await createTestDb();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => c.exited));
  await stopEmbeddedServer(join(dir, '.fusillade'));
  await mock?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('a request goes where its batch said, between processes', () => {
  it('fusillade run next to a running serve in the same directory sends all 3,000 lines to its own upstream', async () => {
    const serve = startCli(['serve', '--port', '0', '--upstream', 'mock'], { cwd: dir });
    children.push(serve);
    await waitFor(() => /Batch API on http/.test(serve.output().stdout), 120_000);

    await writeBatchInput(join(dir, 'in.jsonl'), 3000, 'm-a');
    const run = await runCli(
      ['run', 'in.jsonl', '-o', 'out.jsonl', '--upstream', mock.url, '--model-limit', 'm-a=8'],
      { cwd: dir, timeoutMs: 280_000 },
    );
    expect(run.stderr).not.toMatch(/fusillade:/);
    expect(run.code).toBe(0);
    // (The run's reachability check is a HEAD without a custom id.)
    const sent = () => mock.requests.filter((r) => r.customId !== null);
    const ids = new Set(sent().map((r) => r.customId));
    expect(ids.size).toBe(3000);
    const out = parseJsonl(await readFile(join(dir, 'out.jsonl'), 'utf8'));
    expect(out).toHaveLength(3000);
    // Every answer came from this test's mock: it recorded each line's custom id, and its request
    // ids are the ones in the output.
    const upstreamIds = new Set(sent().map((r) => r.customId));
    expect(out.every((l) => upstreamIds.has(l.custom_id as string))).toBe(true);
    serve.kill('SIGINT');
    expect((await serve.exited).code).toBe(0);
  });

  it("a daemon with another --upstream on serve's database claims none of serve's batches", async () => {
    const other = await startMockUpstream({ recordBodies: false });
    try {
      const dbArgs = ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];
      const sent = (m: MockUpstream) => m.requests.filter((r) => r.customId !== null).length;
      const before = sent(mock);
      const serve = startCli(['serve', '--port', '0', '--upstream', mock.url, ...dbArgs]);
      const daemon = startCli(['daemon', '--upstream', other.url, ...dbArgs]);
      children.push(serve, daemon);
      await waitFor(() => /Batch API on http/.test(serve.output().stdout), 120_000);
      // The other daemon runs before the batch exists: it could claim it from the start.
      await waitFor(() => /fusillade daemon \S+ running/.test(daemon.output().stdout), 120_000);
      const server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
      const key = (await runCli(['keys', 'create', '--owner', 'ops', ...dbArgs])).stdout
        .trim()
        .split('\n')
        .pop()!;
      const env = { FUSILLADE_SERVER: server, FUSILLADE_API_KEY: key };
      await writeBatchInput(join(dir, 'in-serve.jsonl'), 200);
      const waited = await runCli(
        ['submit', join(dir, 'in-serve.jsonl'), '--wait', '-o', join(dir, 'out-serve.jsonl')],
        { env },
      );
      expect(waited.code).toBe(0);
      expect(parseJsonl(await readFile(join(dir, 'out-serve.jsonl'), 'utf8'))).toHaveLength(200);
      expect(sent(mock) - before).toBe(200);
      expect(sent(other)).toBe(0);
      expect(daemon.exitCode).toBeNull(); // it was running all along
      // Only serve's own daemon sent them.
      const { rows } = await db.pool.query(
        `SELECT count(DISTINCT daemon_id)::int AS n FROM ${db.schema}.requests WHERE state = 'completed'`,
      );
      expect(rows[0].n).toBe(1);
      serve.kill('SIGINT');
      daemon.kill('SIGTERM');
      await Promise.all([serve.exited, daemon.exited]);
    } finally {
      await other.close();
    }
  });
});
