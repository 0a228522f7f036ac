import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseModelEntry } from '../../src/config/resolve.js';
import { resolveSettings } from '../../src/config/settings.js';
import { UsageError } from '../../src/config/usage-error.js';
import { ValidationError } from '../../src/domain/errors.js';
import { runCli } from '../cli/support/cli.js';
import { createTestDb, type TestDb } from '../support/db.js';

let dir: string;
let db: TestDb;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-rate-settings-'));
  db = await createTestDb();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await db.close();
});

describe('rate-limit settings', () => {
  it('--model-rpm and --model-tpm (repeatable) and models.MODEL.rpm/tpm reach the daemon config', async () => {
    const file = join(dir, 'config.json');
    await writeFile(
      file,
      JSON.stringify({
        models: {
          'gpt-4o-mini': { limit: 8, rpm: 500, tpm: 200_000 },
          other: { adaptiveConcurrency: true },
        },
      }),
    );
    const tpm = parseModelEntry(
      'modelTpm',
      'claude=40000',
      parseModelEntry('modelTpm', 'gpt-4o-mini=150000'),
    );
    const settings = await resolveSettings({ config: file, modelTpm: tpm, modelRpm: { claude: 50 } }, {});
    expect(settings.daemonConfig.modelRateLimits).toEqual({
      'gpt-4o-mini': { rpm: 500, tpm: 150_000 },
      other: { adaptiveConcurrency: true },
      claude: { rpm: 50, tpm: 40_000 },
    });
    // The routing keeps only what routes (the concurrency limit included).
    expect(settings.routing.models?.['gpt-4o-mini']).toEqual({ limit: 8 });
  });

  it('rejects bad values with a line naming the flag or the field', async () => {
    expect(() => parseModelEntry('modelRpm', 'gpt')).toThrow(/--model-rpm must look like MODEL=N/);
    expect(() => parseModelEntry('modelTpm', 'gpt=0')).toThrow(UsageError);
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ models: { m: { tpm: 'lots' } } }));
    await expect(resolveSettings({ config: file }, {})).rejects.toThrow(
      /models\["m"\]\.tpm must be an integer >= 1/,
    );
    await writeFile(file, JSON.stringify({ daemon: { learnRateLimits: 'maybe' } }));
    await expect(resolveSettings({ config: file }, {})).rejects.toThrow(/learnRateLimits/);
    await writeFile(
      file,
      JSON.stringify({ daemon: { learnRateLimits: false, defaultMaxOutputTokens: 512 } }),
    );
    expect((await resolveSettings({ config: file }, {})).daemonConfig).toMatchObject({
      learnRateLimits: false,
      defaultMaxOutputTokens: 512,
    });
    const r = await runCli(['run', 'x.jsonl', '-o', 'y', '--upstream', 'mock', '--model-tpm', 'gpt=x']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')[0]).toMatch(/--model-tpm for gpt must be an integer >= 1/);
  });

  it('setModelRateLimits writes the limits every daemon leases by, and validates them', async () => {
    const manager = db.manager();
    await manager.setModelRateLimits('gpt-4o-mini', { rpm: 500, tpm: 200_000 });
    const row = async () =>
      (
        await db.pool.query(
          `SELECT rpm, tpm FROM "${db.schema}".model_rate_limits WHERE model = 'gpt-4o-mini'`,
        )
      ).rows[0];
    expect(await row()).toEqual({ rpm: 500, tpm: 200_000 });
    await manager.setModelRateLimits('gpt-4o-mini', { tpm: 100_000 });
    expect(await row()).toEqual({ rpm: null, tpm: 100_000 });
    await expect(manager.setModelRateLimits('gpt-4o-mini', { rpm: 0 })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(manager.setModelRateLimits('', { rpm: 1 })).rejects.toBeInstanceOf(ValidationError);
    // The library config is checked too.
    expect(() => db.manager({ modelRateLimits: { m: { tpm: -1 } } })).toThrow(ValidationError);
    expect(db.manager({ modelRateLimits: { m: { tpm: 10 } } }).config.modelRateLimits).toEqual({
      m: { tpm: 10 },
    });
  });
});
