import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONNECT_TIMEOUT_MS, type DatabaseSettings, openDatabase } from '../../src/cli/database.js';
import { UsageError } from '../../src/config/usage-error.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { runCli } from './support/cli.js';

/**
 * The CLI's (and `fusillade serve`'s) pool: TCP keepalive and a connect timeout, so a database that
 * accepts connections but never answers is a one-line error, not a hang.
 */

const settings = (databaseUrl: string): DatabaseSettings => ({
  databaseUrl,
  schema: 'fusillade_unused',
  dataDir: '.fusillade-unused',
});

/** Accepts TCP connections and never says a word, like a hung server or a half-open network path. */
let silent: Server;
const held: Socket[] = [];
let silentUrl: string;
beforeAll(async () => {
  silent = createServer((socket) => {
    held.push(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentUrl = `postgres://postgres@127.0.0.1:${(silent.address() as { port: number }).port}/test`;
});
afterAll(async () => {
  for (const s of held) s.destroy();
  await new Promise<void>((resolve) => silent.close(() => resolve()));
});

describe('the CLI pool', () => {
  it('turns JIT off for its connections, and --pool-size bounds it', async () => {
    const db = await openDatabase({ ...settings(TEST_DATABASE_URL), poolSize: 3 }, { migrate: false });
    try {
      expect((await db.pool.query('SHOW jit')).rows[0].jit).toBe('off');
      expect(db.pool.options.max).toBe(3);
    } finally {
      await db.close();
    }
  });

  it('through a pooler (--direct-database-url given) sends no start-up options and says when JIT is on', async () => {
    const said: string[] = [];
    // The server's default is jit = on; the "pooler" here is PostgreSQL itself, reached without options.
    const db = await openDatabase(
      { ...settings(TEST_DATABASE_URL), directDatabaseUrl: TEST_DATABASE_URL },
      { migrate: false, poolSize: 1, log: (m) => said.push(m) },
    );
    try {
      expect((await db.pool.query('SHOW jit')).rows[0].jit).toBe('on');
      expect(said.filter((m) => m.includes('ALTER ROLE <role> SET jit = off'))).toHaveLength(1);
    } finally {
      await db.close();
    }
    said.length = 0;
    const direct = await openDatabase(settings(TEST_DATABASE_URL), {
      migrate: false,
      poolSize: 1,
      log: (m) => said.push(m),
    });
    await direct.close();
    expect(said.filter((m) => m.includes('jit'))).toEqual([]);
  });

  it('uses TCP keepalive and a connect timeout', async () => {
    const db = await openDatabase(settings(TEST_DATABASE_URL), { migrate: false, poolSize: 1 });
    try {
      const options = db.pool.options as { keepAlive?: boolean; connectionTimeoutMillis?: number };
      expect(options.keepAlive).toBe(true);
      expect(options.connectionTimeoutMillis).toBe(CONNECT_TIMEOUT_MS);
      expect((await db.pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await db.close();
    }
  });

  // Bounded by the given timeout, not by the silent server nor the default: without a timeout the
  // connect never settles (vitest's hang deadline fails it); with the default instead of the given
  // one, the open started first with a 60 s timeout settles first. (A wall-clock bound of 5 s here
  // was a speed check on a loaded machine.)
  it('gives up on a database that never answers with a one-line error', async () => {
    let longerSettled = false;
    void openDatabase(settings(silentUrl), { connectTimeoutMs: 60_000 })
      .catch(() => {})
      .finally(() => {
        longerSettled = true;
      });
    const err = await openDatabase(settings(silentUrl), { connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(longerSettled).toBe(false);
    expect(err).toBeInstanceOf(UsageError);
    const message = (err as Error).message;
    expect(message).toBe(
      `cannot use the database at ${silentUrl}: no answer within 0.5 s (is it running and reachable?)`,
    );
  });

  it('`fusillade migrate` against it exits 1 with that line after the default timeout', async () => {
    // The kill is a backstop for a hang (the default timeout plus a tsx start on a loaded machine).
    const r = await runCli(['migrate', '--database-url', silentUrl], { timeoutMs: 170_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `fusillade: cannot use the database at ${silentUrl}: no answer within ${CONNECT_TIMEOUT_MS / 1000} s (is it running and reachable?)`,
    );
  });
});
