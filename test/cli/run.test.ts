import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { parseJsonl, runCli, SOURCE_ENTRY, startCli, TSX, waitFor, writeBatchInput } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let dir: string;
let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-run-'));
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

const pgArgs = () => ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];
const customIds = (lines: Record<string, unknown>[]) => lines.map((l) => String(l.custom_id)).sort();

describe('fusillade run on PostgreSQL', () => {
  it('sends every line, writes OpenAI output and error files, exits 1 when a request failed; a re-run sends only the failed one again', async () => {
    mock.reset();
    mock.setBehaviour((req) =>
      req.customId === 'req-7'
        ? { kind: 'status', status: 400, body: { error: { message: 'bad prompt' } } }
        : { kind: 'ok' },
    );
    const input = join(dir, 'mixed.jsonl');
    const output = join(dir, 'mixed.out.jsonl');
    const errors = join(dir, 'mixed.err.jsonl');
    await writeBatchInput(input, 30);
    const args = [
      'run',
      input,
      '-o',
      output,
      '--errors',
      errors,
      '--upstream',
      `${mock.url}/v1`,
      ...pgArgs(),
    ];
    const first = await runCli(args);
    expect(first.stderr).not.toMatch(/\n\s+at /);
    expect(first.code).toBe(1);
    expect(first.stdout).toMatch(/completed: 29 succeeded, 1 failed/);
    expect(first.stdout).toMatch(/progress: 30\/30 {2}100\.0% {2}1 failed/); // plain lines: stdout is not a TTY

    const out = parseJsonl(await readFile(output, 'utf8'));
    expect(out).toHaveLength(29);
    expect(new Set(customIds(out)).size).toBe(29);
    expect(out[0]).toMatchObject({ response: { status_code: 200 }, error: null });
    expect(String(out[0]!.id)).toMatch(/^batch_req_/);
    const err = parseJsonl(await readFile(errors, 'utf8'));
    expect(err).toEqual([
      expect.objectContaining({
        custom_id: 'req-7',
        response: expect.objectContaining({ status_code: 400, body: { error: { message: 'bad prompt' } } }),
      }),
    ]);
    expect(mock.countsByCustomId.get('req-1')).toBe(1);

    // Same command again: the batch is found by its content hash; only the failed request is retried.
    mock.setBehaviour(null);
    const second = await runCli(args);
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(/retrying 1 failed request/);
    expect(parseJsonl(await readFile(output, 'utf8'))).toHaveLength(30);
    expect(parseJsonl(await readFile(errors, 'utf8'))).toEqual([]);
    expect(mock.countsByCustomId.get('req-7')).toBe(2);
    for (let i = 1; i <= 30; i++) if (i !== 7) expect(mock.countsByCustomId.get(`req-${i}`)).toBe(1);
  });

  it('refuses a file whose model has no upstream, naming the line, and stores nothing', async () => {
    const input = join(dir, 'unrouted.jsonl');
    const config = join(dir, 'routes.json');
    await writeBatchInput(input, 3, 'gpt-unrouted');
    await writeFile(config, JSON.stringify({ models: { 'gpt-routed': { upstream: mock.url } } }));
    const before = (await db.manager().listFiles({ owner: 'cli' })).data.length;
    const r = await runCli(['run', input, '-o', join(dir, 'x.jsonl'), '--config', config, ...pgArgs()]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(
      /^fusillade: .*unrouted\.jsonl: line 1: model "gpt-unrouted" has no upstream/,
    );
    expect((await db.manager().listFiles({ owner: 'cli' })).data.length).toBe(before);
  });

  it('refuses a file with a body that is not JSON, naming the line, and stores nothing (the store parses each body once)', async () => {
    const input = join(dir, 'bad-body.jsonl');
    await writeBatchInput(input, 3);
    const lines = (await readFile(input, 'utf8')).trimEnd().split('\n');
    // The model is readable, the rest of the body is not JSON: only the store's full parse sees it.
    lines[1] = lines[1]!.replace('"messages":', '"messages":oops');
    await writeFile(input, `${lines.join('\n')}\n`);
    const before = (await db.manager().listFiles({ owner: 'cli' })).data.length;
    const r = await runCli(['run', input, '-o', join(dir, 'y.jsonl'), '--upstream', mock.url, ...pgArgs()]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^fusillade: .*bad-body\.jsonl: line 2: .*not valid JSON/);
    expect((await db.manager().listFiles({ owner: 'cli' })).data.length).toBe(before);
  });

  it('resumes after SIGKILL mid-run: nothing completed is sent again, nothing is lost', async () => {
    mock.reset();
    // The mock answers the first 100 requests and holds every later one until the kill: the run
    // cannot get further than 100 + its slots however the two processes are scheduled (waiting for
    // 100 and then killing let a loaded machine's run send all 300 before the kill landed).
    const ANSWERED = 100;
    let arrived = 0;
    mock.setBehaviour((req) =>
      req.customId !== null && ++arrived > ANSWERED ? { kind: 'hang' } : { kind: 'delay', ms: 40 },
    );
    const input = join(dir, 'resume.jsonl');
    const output = join(dir, 'resume.out.jsonl');
    const config = join(dir, 'fast-reclaim.json');
    await writeBatchInput(input, 300);
    // A killed daemon's rows are reclaimed once its heartbeat is this stale.
    await writeFile(
      config,
      JSON.stringify({ daemon: { heartbeatIntervalMs: 200, deadDaemonAfterMs: 1500 } }),
    );
    const limit = 8;
    const args = [
      'run',
      input,
      '-o',
      output,
      '--upstream',
      mock.url,
      '--default-limit',
      String(limit),
      '--config',
      config,
    ];
    const victim = startCli([...args, ...pgArgs()]);
    // The slots hold unanswered requests, and the answered ones are stored: the kill then catches
    // the held requests between sending and storing, and finds 100 stored.
    await waitFor(() => arrived >= ANSWERED + limit);
    const manager = db.manager();
    const completedRows = async () => {
      const batch = (await manager.listBatches({ owner: 'cli', limit: 1 })).data[0]!;
      return (await manager.getBatchRequests(batch.id, { state: 'completed', limit: 1000 })).map(
        (r) => r.customId!,
      );
    };
    await waitFor(async () => (await completedRows()).length >= ANSWERED);
    victim.kill('SIGKILL');
    const killed = await victim.exited;
    expect(killed.signal).toBe('SIGKILL');
    mock.setBehaviour(() => ({ kind: 'delay', ms: 40 }));
    const sentBeforeKill = new Map(mock.countsByCustomId);
    // Each sent once, and no more than the answered ones and a full set of slots (read at the mock).
    expect(sentBeforeKill.size).toBe(arrived);
    expect(arrived).toBeLessThanOrEqual(ANSWERED + (mock.maxInFlight.byModel.get('gpt-test') ?? 0));
    // What the killed run had durably completed, read from the database.
    const completedAtKill = await completedRows();
    expect(completedAtKill).toHaveLength(ANSWERED);

    const resumed = await runCli([...args, ...pgArgs()]);
    expect(resumed.stderr).toMatch(/resuming: \d+ of 300 requests already done/);
    expect(resumed.code).toBe(0);
    const out = parseJsonl(await readFile(output, 'utf8'));
    expect(out).toHaveLength(300);
    expect(new Set(customIds(out)).size).toBe(300); // each request completed exactly once
    // Nothing stored as completed was sent again ...
    for (const id of completedAtKill) expect(mock.countsByCustomId.get(id)).toBe(1);
    // ... and a request went out twice only if the kill caught it between sending and storing.
    const twice = [...mock.countsByCustomId.entries()].filter(([, n]) => n > 1);
    for (const [id, n] of twice) {
      expect(n).toBe(2);
      expect(sentBeforeKill.get(id)).toBe(1);
    }
    expect(twice.length).toBeLessThanOrEqual(sentBeforeKill.size - completedAtKill.length);
    const sends = [...mock.countsByCustomId.values()].reduce((a, b) => a + b, 0);
    expect(sends).toBe(300 + twice.length);
  });

  it('on SIGINT hands the work back and exits 130; the re-run finishes without sending anything twice', async () => {
    mock.reset();
    mock.setBehaviour(() => ({ kind: 'delay', ms: 40 }));
    const input = join(dir, 'sigint.jsonl');
    const output = join(dir, 'sigint.out.jsonl');
    await writeBatchInput(input, 200);
    const args = ['run', input, '-o', output, '--upstream', mock.url, '--default-limit', '8', ...pgArgs()];
    // Requests after the first 50 are held at the mock until the run has seen the SIGINT (its
    // daemon logs that it is stopping: no more claims), then answered: the run cannot send the
    // whole file before the signal lands however the processes are scheduled, and what was in
    // flight finishes rather than going out twice.
    let arrived = 0;
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    mock.setBehaviour(async (req) => {
      if (req.customId !== null && ++arrived > 50) await held;
      return { kind: 'delay', ms: 40 };
    });
    const interrupted = startCli([...args, '--verbose']);
    await waitFor(() => arrived >= 50 + 8);
    interrupted.kill('SIGINT');
    await waitFor(() => interrupted.output().stderr.includes('daemon stopping'));
    release();
    const first = await interrupted.exited;
    expect(first.code).toBe(130);
    expect(first.stderr).toMatch(
      /interrupted \(SIGINT\) with \d+ of 200 done; run the same command again to resume/,
    );
    // The 50 answered and those held in its slots, each once: a run that went on claiming after the
    // signal would send the rest of the 200 once the held ones were answered.
    expect(mock.countsByCustomId.size).toBe(arrived);
    expect(arrived).toBeLessThanOrEqual(50 + (mock.maxInFlight.byModel.get('gpt-test') ?? 0));

    const second = await runCli(args);
    expect(second.code).toBe(0);
    expect(parseJsonl(await readFile(output, 'utf8'))).toHaveLength(200);
    expect(mock.countsByCustomId.size).toBe(200);
    for (const n of mock.countsByCustomId.values()) expect(n).toBe(1);
  });

  it("--default-limit governs the run's models after earlier runs stored another default; an explicit limit still wins", async () => {
    const model = 'gpt-default-limit';
    const limitRow = async () =>
      (await db.pool.query(`SELECT concurrency FROM ${db.schema}.model_limits WHERE model = $1`, [model]))
        .rows[0]?.concurrency;
    mock.reset();
    mock.setBehaviour(() => ({ kind: 'delay', ms: 100 }));
    // An earlier run without the flag: the model's limit is stored with the built-in default (16).
    const earlier = join(dir, 'default-earlier.jsonl');
    await writeBatchInput(earlier, 20, model);
    const first = await runCli([
      'run',
      earlier,
      '-o',
      join(dir, 'default-earlier.out.jsonl'),
      '--upstream',
      mock.url,
      ...pgArgs(),
    ]);
    expect(first.code).toBe(0);
    expect(await limitRow()).toBe(16);

    // The flag the user types now governs this run (counted at the mock), and is what is stored.
    mock.reset();
    // Said on failure: requests still open at the mock when it was reset, and the stored row.
    const openAtReset = mock.inFlight.byModel.get(model) ?? 0;
    mock.setBehaviour(() => ({ kind: 'delay', ms: 100 }));
    const input = join(dir, 'default-now.jsonl');
    await writeBatchInput(input, 60, model);
    const args = ['run', input, '-o', join(dir, 'default-now.out.jsonl'), '--upstream', mock.url];
    const second = await runCli([...args, '--default-limit', '4', ...pgArgs()]);
    expect(second.code).toBe(0);
    expect(mock.countsByCustomId.size).toBe(60);
    const context = JSON.stringify({
      openAtReset,
      row: (await db.pool.query(`SELECT * FROM ${db.schema}.model_limits WHERE model = $1`, [model])).rows[0],
    });
    expect(mock.maxInFlight.byModel.get(model), context).toBeLessThanOrEqual(4);
    expect(await limitRow()).toBe(4);

    // A limit set for the model itself (setModelConcurrency, like --model-limit) is more specific
    // than any default: a later run's --default-limit leaves it.
    await db.manager().setModelConcurrency(model, 2);
    mock.reset();
    mock.setBehaviour(() => ({ kind: 'delay', ms: 100 }));
    const again = join(dir, 'default-explicit.jsonl');
    await writeBatchInput(again, 30, model);
    const third = await runCli([
      'run',
      again,
      '-o',
      join(dir, 'default-explicit.out.jsonl'),
      '--upstream',
      mock.url,
      '--default-limit',
      '8',
      ...pgArgs(),
    ]);
    expect(third.code).toBe(0);
    expect(mock.countsByCustomId.size).toBe(30);
    expect(mock.maxInFlight.byModel.get(model)).toBeLessThanOrEqual(2);
    expect(await limitRow()).toBe(2);
  });

  it.skipIf(!existsSync('/usr/bin/script'))('draws a live bar in place on a terminal', async () => {
    mock.reset();
    mock.setBehaviour(() => ({ kind: 'delay', ms: 20 }));
    const input = join(dir, 'tty.jsonl');
    await writeBatchInput(input, 120);
    const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const command = [
      process.execPath,
      '--import',
      TSX,
      SOURCE_ENTRY,
      'run',
      input,
      '-o',
      join(dir, 'tty.out.jsonl'),
    ]
      .concat(['--upstream', mock.url, '--default-limit', '4', ...pgArgs()])
      .map(quote)
      .join(' ');
    // util-linux script(1) gives the CLI a pseudo-terminal as stdout.
    // A backstop for a hang, not a speed check: a loaded machine starts tsx slowly.
    const { stdout } = await promisify(execFile)('script', ['-qefc', command, '/dev/null'], {
      timeout: 170_000,
    });
    expect(stdout).toContain('\r\x1b[2K▕');
    expect(stdout).not.toContain('progress: ');
    expect(stdout).toMatch(/▕█{10,}▏ 120\/120 {2}100\.0% {2}0 failed {2}\d+ req\/s {2}ETA 0s/);
  });
});
