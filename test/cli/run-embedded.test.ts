import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stopEmbeddedServer } from '../../src/embedded/embedded-postgres.js';
import { readPostmasterPid } from '../../src/embedded/postmaster-pid.js';
import { parseJsonl, runCli, writeBatchInput } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
vi.setConfig({ testTimeout: 180_000 });

let dir: string;
let dataDir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-embedded-'));
  await chmod(dir, 0o755); // as root, the postgres account must reach the data directory
  dataDir = join(dir, '.fusillade');
});
afterAll(async () => {
  await stopEmbeddedServer(dataDir);
  await rm(dir, { recursive: true, force: true });
});

describe('fusillade run on the embedded default (shipped bin)', () => {
  it('runs with no database set up, keeps state in the data directory, and a re-run finds it done', async () => {
    const input = join(dir, 'in.jsonl');
    const output = join(dir, 'out.jsonl');
    await writeBatchInput(input, 25);
    // cwd = dir: the default data directory is ./.fusillade
    const first = await runCli(['run', 'in.jsonl', '-o', 'out.jsonl', '--upstream', 'mock'], {
      cwd: dir,
      shipped: true,
    });
    expect(first.stderr).toMatch(/initialising the embedded PostgreSQL/);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/completed: 25 succeeded, 0 failed → out\.jsonl/);
    const lines = parseJsonl(await readFile(output, 'utf8'));
    expect(lines.map((l) => l.custom_id).sort()).toEqual(
      Array.from({ length: 25 }, (_, i) => `req-${i + 1}`).sort(),
    );
    expect((await stat(join(dataDir, 'pgdata', 'PG_VERSION'))).isFile()).toBe(true);
    // The last process out stopped the server.
    expect(await readPostmasterPid(join(dataDir, 'pgdata'))).toBeUndefined();

    // Second start: no initdb; the batch is found by the input's hash and is already complete.
    const again = await runCli(['run', input, '-o', output, '--upstream', 'mock', '--data-dir', dataDir], {
      shipped: true,
    });
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/initialising/);
    expect(again.stdout).toMatch(/completed: 25 succeeded/);
    expect(parseJsonl(await readFile(output, 'utf8'))).toHaveLength(25);
  });
});
