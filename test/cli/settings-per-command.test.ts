import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor } from '../support/mock-upstream.js';
import { runCli, startCli, writeBatchInput } from './support/cli.js';

/**
 * Each command that runs a daemon, as a process: its daemon takes `--default-limit` over the config
 * file's `daemon.defaultModelConcurrency` (serve used to take the file's). The daemon writes the
 * default limit of a model into model_limits when it first sees live work of the model.
 */

vi.setConfig({ testTimeout: 240_000 });

let dir: string;
let config: string;
let mock: MockUpstream;
const dbs: TestDb[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-settings-cli-'));
  config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ daemon: { defaultModelConcurrency: 7 } }));
  mock = await startMockUpstream({ port: 0, latencyMs: 50 });
});
afterAll(async () => {
  await mock.close();
  for (const db of dbs) await db.close();
  await rm(dir, { recursive: true, force: true });
});

async function freshDb(): Promise<TestDb> {
  const db = await createTestDb({ max: 2 });
  dbs.push(db);
  return db;
}

async function modelLimit(db: TestDb, model: string): Promise<number | undefined> {
  const r = await db.pool.query<{ concurrency: number }>(
    `SELECT concurrency FROM "${db.schema}".model_limits WHERE model = $1`,
    [model],
  );
  return r.rows[0]?.concurrency;
}

describe.concurrent('--default-limit beats the config file under every command', () => {
  for (const command of ['serve', 'daemon'] as const) {
    it(command, async () => {
      const db = await freshDb();
      const model = `house-${command}`;
      await createBatch(db.manager(), mockTemplates(mock, 3, { model }));
      const child = startCli([
        command,
        ...(command === 'serve' ? ['--port', '0'] : []),
        '--upstream',
        mock.url,
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        db.schema,
        '--config',
        config,
        '--default-limit',
        '3',
      ]);
      try {
        const limit = await waitFor(() => modelLimit(db, model), 180_000, 100);
        expect(limit).toBe(3);
      } finally {
        child.kill('SIGTERM');
        await child.exited;
      }
    });
  }

  it('run', async () => {
    const db = await freshDb();
    const input = join(dir, 'in.jsonl');
    await writeBatchInput(input, 3, 'house-run');
    const r = await runCli(
      [
        'run',
        input,
        '-o',
        join(dir, 'out.jsonl'),
        '--upstream',
        'mock',
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        db.schema,
        '--config',
        config,
        '--default-limit',
        '3',
      ],
      { env: { FUSILLADE_DEFAULT_LIMIT: '5' } },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await modelLimit(db, 'house-run')).toBe(3);
  });
});
