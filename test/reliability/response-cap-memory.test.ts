import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { startCli } from '../cli/support/cli.js';
import { chatLine, jsonl, upload } from '../server/support.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * Finding 2 of issue 17, measured: `fusillade serve` (the CLI as a child process, daemon in-process)
 * with `daemon.maxResponseBytes` at 40 MB in its config file meets two endless answers and four
 * 30 MB answers at once. Before the cap, two endless answers alone grew the server by 210 MB in 12 s
 * and four 50 MB answers took it to ~1 GB. The child's resident memory is read from /proc: the
 * peak (VmHWM, reset after the warm-up) minus the resident size before the hostile batch.
 */

const MB = 1024 * 1024;
const CAP = 40 * MB;
const LIMIT_MB = 500;
const BEHAVIOURS: Record<string, MockBehaviour> = {
  'endless-1': { kind: 'endless' },
  'endless-2': { kind: 'endless' },
  'big-1': { kind: 'large', bytes: 30 * MB },
  'big-2': { kind: 'large', bytes: 30 * MB },
  'big-3': { kind: 'large', bytes: 30 * MB },
  'big-4': { kind: 'large', bytes: 30 * MB },
};

let mock: MockUpstream;
let db: TestDb;
let dir: string;
let serve: ReturnType<typeof startCli> | undefined;

beforeAll(async () => {
  mock = await startMockUpstream();
  mock.setBehaviour((req) => BEHAVIOURS[req.customId ?? ''] ?? { kind: 'ok' });
  db = await createTestDb();
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cap-'));
});

afterAll(async () => {
  serve?.kill('SIGKILL');
  await serve?.exited;
  await mock?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A /proc/<pid>/status field in MB (Linux). */
async function procMb(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return kb / 1024;
}

async function runBatch(client: OpenAI, ids: string[]) {
  const file = await upload(client, jsonl(ids.map((id, i) => chatLine(i, { custom_id: id }))));
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  return waitFor(async () => {
    const b = await client.batches.retrieve(created.id);
    return b.status === 'completed' ? b : null;
  }, 120_000);
}

describe.runIf(process.platform === 'linux')('memory with hostile upstream answers', () => {
  it(`keeps the server's growth under ${LIMIT_MB} MB with two endless and four 30 MB answers in flight (cap 40 MB)`, async () => {
    const config = join(dir, 'config.json');
    await writeFile(
      config,
      JSON.stringify({ daemon: { maxResponseBytes: CAP, requestTimeoutMs: 300_000, pollIntervalMs: 100 } }),
    );
    serve = startCli(
      [
        'serve',
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        db.schema,
        '--port',
        '0',
        '--upstream',
        mock.url,
        '--model-limit',
        'gpt-test=8',
        '--config',
        config,
      ],
      { env: { FUSILLADE_UPSTREAM_API_KEY: 'sk-memory' }, timeoutMs: 600_000 },
    );
    const url = await waitFor(
      () => /Batch API on (http:\/\/\S+)\/v1/.exec(serve!.output().stdout)?.[1],
      60_000,
    );
    const key = (await createApiKey(db.pool, db.schema, { owner: 'alice' })).key;
    // The client's own retries: on a loaded machine a status read can meet a 503 while the server
    // parses and stores 30 MB answers (the CPU they cost is proportional to their size).
    const client = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 5 });
    const pid = serve.pid!;

    // Warm-up: every code path once (upload, claim, send, write, finalize) with small answers.
    await runBatch(client, ['warm-1', 'warm-2']);
    await new Promise((r) => setTimeout(r, 500));
    const before = await procMb(pid, 'VmRSS');
    // Reset the peak to the current size (Linux ≥ 4.0); if refused, the peak since start is used.
    const reset = await writeFile(`/proc/${pid}/clear_refs`, '5').then(
      () => true,
      () => false,
    );

    const started = Date.now();
    const batch = await runBatch(client, Object.keys(BEHAVIOURS));
    const seconds = (Date.now() - started) / 1000;
    const peak = await procMb(pid, 'VmHWM');
    const growth = peak - before;
    console.log(
      `RSS before ${before.toFixed(0)} MB, peak ${peak.toFixed(0)} MB (peak ${reset ? 'reset after warm-up' : 'since start'}): growth ${growth.toFixed(0)} MB; batch done in ${seconds.toFixed(1)} s`,
    );
    expect(batch.request_counts).toMatchObject({ total: 6, completed: 4, failed: 2 });
    const errors = (await (await client.files.content(batch.error_file_id!)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { custom_id: string; error: { code: string } });
    expect(errors.map((e) => [e.custom_id, e.error.code]).sort()).toEqual([
      ['endless-1', 'response_too_large'],
      ['endless-2', 'response_too_large'],
    ]);
    // All six were at the upstream at once (limit 8), each sent once.
    expect(mock.maxInFlight.total).toBeGreaterThanOrEqual(6);
    for (const id of Object.keys(BEHAVIOURS)) expect(mock.countsByCustomId.get(id), id).toBe(1);
    expect(growth).toBeLessThan(LIMIT_MB);
  }, 300_000);
});
