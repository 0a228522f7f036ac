import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { waitFor as waitForValue } from '../support/mock-upstream.js';
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.js';
import { runCli, startCli, waitFor } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 600_000 });

let db: TestDb;
let bouncer: PgBouncer;
let mock: MockUpstream;
const children: ReturnType<typeof startCli>[] = [];
beforeAll(async () => {
  db = await createTestDb();
  bouncer = await startPgBouncer({ poolSize: 6 });
  mock = await startMockUpstream();
});
afterAll(async () => {
  // What the children said, for a failure's diagnosis (a child that died says why here).
  for (const c of children) {
    const { code, signal, stderr } = c.output();
    if (code !== 0 || signal !== null)
      console.error(`child ${c.pid} (${code}/${signal}):\n${stderr.slice(-4000)}`);
  }
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await mock.close();
  await bouncer?.close();
  await db.close();
});

const LINES = 20_000;
const line = (i: number) =>
  JSON.stringify({
    custom_id: `req-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'gpt-test', messages: [{ role: 'user', content: `hello ${i}` }] },
  });

describe('through PgBouncer in transaction mode, with --direct-database-url for the sessions', () => {
  it('serve and two daemons complete a 20,000-line batch with nothing stuck, and the API works through the openai client', async () => {
    const s = `"${db.schema}"`;
    const dbArgs = [
      '--database-url',
      bouncer.url,
      '--direct-database-url',
      TEST_DATABASE_URL,
      '--schema',
      db.schema,
      '--pool-size',
      '4',
    ];
    // No fallback poll within the test (10 min): a batch is taken up only when its NOTIFY, sent
    // through the pooler in the creating transaction, is heard on a daemon's direct LISTEN session.
    const config = join(await mkdtemp(join(tmpdir(), 'fusillade-pgbouncer-test-')), 'config.json');
    await writeFile(config, JSON.stringify({ daemon: { pollIntervalMs: 600_000 } }));
    const dispatch = ['--config', config, '--upstream', mock.url, '--default-limit', '32', ...dbArgs];
    // startCli kills a child after 120 s by default: these live as long as the test.
    const serve = startCli(['serve', '--port', '0', ...dispatch], { timeoutMs: 600_000 });
    children.push(serve);
    for (let i = 0; i < 2; i++) children.push(startCli(['daemon', ...dispatch], { timeoutMs: 600_000 }));
    await waitFor(() => serve.output().stdout.includes('Ctrl-C stops'), 120_000);
    const server = /Batch API on (http:\/\/\S+)\/v1/.exec(serve.output().stdout)![1]!;
    // Each daemon's session goes straight to PostgreSQL and holds its liveness lock there, taken
    // after its LISTEN.
    const listening = async () =>
      (
        await db.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${s}.daemons d
             JOIN pg_locks l ON l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                            AND ((l.classid::int8 << 32) | l.objid::int8) = d.liveness_key
            WHERE d.stopped_at IS NULL`,
        )
      ).rows[0]!.n;
    await waitFor(async () => (await listening()) === 3, 120_000);

    const key = (await runCli(['keys', 'create', '--owner', 'alice', ...dbArgs])).stdout
      .trim()
      .split('\n')
      .pop()!;
    const client = new OpenAI({ apiKey: key, baseURL: `${server}/v1`, maxRetries: 0 });
    const text = `${Array.from({ length: LINES }, (_, i) => line(i + 1)).join('\n')}\n`;
    const file = await client.files.create({
      file: await toFile(Buffer.from(text), 'in.jsonl'),
      purpose: 'batch',
    });
    expect(file).toMatchObject({ object: 'file', purpose: 'batch', bytes: Buffer.byteLength(text) });
    expect(file.expires_at! - file.created_at).toBe(30 * 86_400);
    const batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await waitForValue(
      async () => {
        const b = await client.batches.retrieve(batch.id);
        return b.status === 'completed' ? b : null;
      },
      480_000,
      250,
    );
    expect(done.request_counts).toEqual({ total: LINES, completed: LINES, failed: 0 });
    const output = (await (await client.files.content(done.output_file_id!)).text()).trimEnd().split('\n');
    expect(output).toHaveLength(LINES);
    const answered = output.map(
      (l) => JSON.parse(l) as { custom_id: string; response: { status_code: number } },
    );
    expect(new Set(answered.map((l) => l.custom_id))).toEqual(
      new Set(Array.from({ length: LINES }, (_, i) => `req-${i + 1}`)),
    );
    expect(answered.filter((l) => l.response.status_code !== 200)).toEqual([]);
    // Nothing stuck: no row left claimed or processing (a lost write would hold one for its lease).
    const states = await db.pool.query<{ state: string; n: number }>(
      `SELECT state, count(*)::int AS n FROM ${s}.requests GROUP BY state`,
    );
    expect(states.rows).toEqual([{ state: 'completed', n: LINES }]);
    // Each line went upstream (at least once: a hand-back may send one again, never none).
    const sent = new Set(mock.requests.flatMap((r) => (r.customId?.startsWith('req-') ? [r.customId] : [])));
    expect(sent.size).toBe(LINES);

    // More of the API: listing, a second batch cancelled, deleting a file.
    const listed: string[] = [];
    for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
    expect(listed).toContain(batch.id);
    const files: string[] = [];
    for await (const f of client.files.list()) files.push(f.id);
    expect(files).toContain(file.id);
    const small = await client.files.create({
      file: await toFile(Buffer.from(`${line(1)}\n`), 'small.jsonl'),
      purpose: 'batch',
    });
    const second = await client.batches.create({
      input_file_id: small.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    // A one-line batch may end before the cancel arrives: then the cancel is refused with a 400.
    const cancelled = await client.batches.cancel(second.id).catch(async (err) => {
      if ((err as { status?: number }).status !== 400) throw err;
      return client.batches.retrieve(second.id);
    });
    expect(['cancelling', 'cancelled', 'completed']).toContain(cancelled.status);
    await waitFor(async () =>
      ['cancelled', 'completed'].includes((await client.batches.retrieve(second.id)).status),
    );
    expect(await client.files.delete(small.id)).toMatchObject({ id: small.id, deleted: true });
    await expect(client.files.retrieve(small.id)).rejects.toMatchObject({ status: 404 });

    for (const c of children) c.kill('SIGTERM');
    const results = await Promise.all(children.map((c) => c.exited));
    for (const r of results) {
      expect(r.code).toBe(0);
      expect(r.stderr).not.toMatch(/prepared statement/i);
    }
    expect(bouncer.output()).not.toMatch(/prepared statement/i);
  });
});
