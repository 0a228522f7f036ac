import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startEmbeddedPostgres, stopEmbeddedServer } from '../../src/embedded/embedded-postgres.js';
import { isPostgresAlive, readPostmasterPid } from '../../src/embedded/postmaster-pid.js';
import { afterPoll, EMPTY_POLLS, INITIAL_WATCH, WATCHDOG_APP } from '../../src/embedded/watchdog.js';
import { startCli, waitFor } from '../cli/support/cli.js';

/**
 * Issue 17 (smaller item): a kill -9 of the last fusillade process left the embedded PostgreSQL
 * running for ever. The watchdog stops it once no process is attached.
 */

vi.setConfig({ testTimeout: 240_000 });

describe('the watchdog decision', () => {
  it(`stops after ${EMPTY_POLLS} empty polls in a row, only once a process was seen`, () => {
    let s = INITIAL_WATCH;
    // Nothing seen yet (the starter is still connecting): never stops.
    for (let i = 0; i < 10; i++) {
      const r = afterPoll(s, 0);
      expect(r.stop).toBe(false);
      s = r.state;
    }
    s = afterPoll(s, 2).state;
    for (let i = 1; i < EMPTY_POLLS; i++) {
      const r = afterPoll(s, 0);
      expect(r.stop).toBe(false);
      s = r.state;
    }
    // A process arriving resets the count.
    s = afterPoll(s, 1).state;
    expect(s.empty).toBe(0);
    for (let i = 1; i < EMPTY_POLLS; i++) s = afterPoll(s, 0).state;
    expect(afterPoll(s, 0).stop).toBe(true);
  });
});

let root: string;
let dataDir: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'fusillade-watchdog-'));
  dataDir = join(root, '.fusillade');
});
afterAll(async () => {
  await stopEmbeddedServer(dataDir);
  await rm(root, { recursive: true, force: true });
});

const isRunning = async (pgdata: string) => {
  const running = await readPostmasterPid(pgdata);
  return running !== undefined && (await isPostgresAlive(running.pid, pgdata));
};

const serveArgs = () => ['serve', '--port', '0', '--upstream', 'mock', '--data-dir', dataDir];

async function presenceCount(url: string): Promise<{ presence: number; watchdogs: number }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ presence: number; watchdogs: number }>(
      `SELECT count(*) FILTER (WHERE application_name = 'fusillade-presence')::int AS presence,
              count(*) FILTER (WHERE application_name = $1)::int AS watchdogs
         FROM pg_stat_activity`,
      [WATCHDOG_APP],
    );
    return rows[0]!;
  } finally {
    await c.end();
  }
}

describe('kill -9 of the last fusillade process', () => {
  it('the embedded PostgreSQL goes away; while another process is attached it stays', async () => {
    const first = startCli(serveArgs(), { cwd: root });
    const second = startCli(serveArgs(), { cwd: root });
    try {
      for (const p of [first, second]) {
        await waitFor(() => /Batch API on http/.test(p.output().stdout), 120_000);
      }
      // The URL, as any process gets it (attaching and leaving at once: the others stay).
      const probe = await startEmbeddedPostgres({ dataDir });
      const { pgdata, connectionString: url } = probe;
      expect(probe.started).toBe(false);
      await probe.stop();
      expect((await presenceCount(url)).presence).toBe(2);
      // One watchdog, or two when the second process attached before the first's was connected. It is
      // a detached process of its own that connects once started: wait for its connection.
      await waitFor(async () => (await presenceCount(url)).watchdogs >= 1);

      first.kill('SIGKILL');
      expect((await first.exited).signal).toBe('SIGKILL');
      await waitFor(async () => (await presenceCount(url)).presence === 1);
      expect(await isRunning(pgdata)).toBe(true);
      const server = /Batch API on (http:\/\/\S+)\/v1/.exec(second.output().stdout)![1]!;
      expect((await fetch(`${server}/healthz`)).status).toBe(200);

      second.kill('SIGKILL');
      const killedAt = Date.now();
      expect((await second.exited).signal).toBe('SIGKILL');
      await waitFor(async () => !(await isRunning(pgdata)), 120_000);
      console.log(
        `watchdog: embedded PostgreSQL stopped ${Date.now() - killedAt} ms after the last process was killed`,
      );
      // A clean (fast) shutdown: the lock file is gone.
      expect(await readPostmasterPid(pgdata)).toBeUndefined();
    } finally {
      for (const p of [first, second]) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  });
});
