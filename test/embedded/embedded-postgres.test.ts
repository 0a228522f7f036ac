import { chown, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { startEmbeddedPostgres, stopEmbeddedServer } from '../../src/embedded/embedded-postgres.js';
import { isPostgresAlive, readPostmasterPid } from '../../src/embedded/postmaster-pid.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { TEST_DATABASE_URL, template } from '../support/db.js';

let root: string;
let dataDir: string;
let pgdata = '';
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'fusillade-embedded-'));
  dataDir = join(root, '.fusillade');
});
afterAll(async () => {
  await stopEmbeddedServer(dataDir);
  await rm(root, { recursive: true, force: true });
  // As root, mkdtemp's 0700 directory is out of the postgres account's reach: pgdata went to /var/tmp.
  if (pgdata) await rm(pgdata, { recursive: true, force: true });
  await rm(`${pgdata}.log`, { force: true });
});

async function withPool<T>(url: string, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

describe('embedded PostgreSQL', () => {
  let batchId = '';

  it('starts in an empty directory, migrates, and round-trips a file and a batch', async () => {
    const db = await startEmbeddedPostgres({ dataDir });
    try {
      pgdata = db.pgdata;
      expect(db.started).toBe(true);
      expect(db.connectionString).toMatch(/^postgres:\/\/fusillade:[^@]+@127\.0\.0\.1:\d+\/postgres$/);
      await withPool(db.connectionString, async (pool) => {
        expect(await migrate(pool)).toContain(1);
        const manager = new PostgresRequestManager(pool);
        const fileId = await manager.createFile('in.jsonl', null, [template(1), template(2), template(3)]);
        batchId = await manager.createBatch(fileId);
        const status = await manager.getBatchStatus(batchId);
        expect(status).toMatchObject({ fileId, totalRequests: 3, pendingRequests: 3 });
      });
    } finally {
      await db.stop();
    }
    // The last process out shuts the server down.
    expect(await readPostmasterPid(pgdata)).toBeUndefined();
  });

  it('keeps the data across a restart without re-initialising', async () => {
    const db = await startEmbeddedPostgres({ dataDir });
    try {
      expect(db.started).toBe(true);
      await withPool(db.connectionString, async (pool) => {
        expect(await migrate(pool)).toEqual([]); // already migrated: the same cluster
        const status = await new PostgresRequestManager(pool).getBatchStatus(batchId);
        expect(status.totalRequests).toBe(3);
      });
    } finally {
      await db.stop();
    }
  });

  it('recovers from a stale postmaster.pid naming a pid that is not its server', async () => {
    // As after a crash: the lock file names a pid now used by another PostgreSQL (the test server's).
    const other = new pg.Client(TEST_DATABASE_URL);
    await other.connect();
    const { rows } = await other.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
    );
    await other.end();
    const foreignPid = rows[0]!.pid;
    const lock = `${foreignPid}\n${pgdata}\n0\n5\n\n127.0.0.1\n0 0\nready\n`;
    await writeFile(join(pgdata, 'postmaster.pid'), lock);
    if (typeof process.getuid === 'function' && process.getuid() === 0) {
      await chown(join(pgdata, 'postmaster.pid'), (await stat(pgdata)).uid, (await stat(pgdata)).gid);
    }
    const db = await startEmbeddedPostgres({ dataDir });
    try {
      expect(db.started).toBe(true);
      expect((await readPostmasterPid(pgdata))!.pid).not.toBe(foreignPid);
    } finally {
      await db.stop();
    }
  });

  it('lets a second user attach to the running server, which outlives the first to leave', async () => {
    const first = await startEmbeddedPostgres({ dataDir });
    const second = await startEmbeddedPostgres({ dataDir });
    try {
      expect(first.started).toBe(true);
      expect(second.started).toBe(false);
      expect(second.port).toBe(first.port);
      const pid = (await readPostmasterPid(pgdata))!.pid;
      await first.stop(); // second still attached: the server keeps running
      expect(await isPostgresAlive(pid)).toBe(true);
      await withPool(second.connectionString, async (pool) => {
        expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      });
      await second.stop(); // last one out
      expect(await isPostgresAlive(pid)).toBe(false);
    } finally {
      await first.stop();
      await second.stop();
    }
  });

  it('is real PostgreSQL: a second connection skips rows locked by the first', async () => {
    const db = await startEmbeddedPostgres({ dataDir });
    const a = new pg.Client(db.connectionString);
    const b = new pg.Client(db.connectionString);
    try {
      await a.connect();
      await b.connect();
      const claim = `SELECT id FROM fusillade.requests WHERE batch_id = $1
                      ORDER BY line_number LIMIT 2 FOR UPDATE SKIP LOCKED`;
      await a.query('BEGIN');
      await b.query('BEGIN');
      const byA = (await a.query(claim, [batchId])).rows.map((r) => r.id);
      const byB = (await b.query(claim, [batchId])).rows.map((r) => r.id);
      expect(byA).toHaveLength(2);
      expect(byB).toHaveLength(1); // not blocked, and none of A's rows
      expect(byA).not.toContain(byB[0]);
      await a.query('COMMIT');
      await b.query('COMMIT');
    } finally {
      await a.end();
      await b.end();
      await db.stop();
    }
  });

  it('two processes starting a fresh directory at once end up sharing one server', async () => {
    const fresh = join(root, 'race');
    const [a, b] = await Promise.all([
      startEmbeddedPostgres({ dataDir: fresh }),
      startEmbeddedPostgres({ dataDir: fresh }),
    ]);
    try {
      expect([a.started, b.started].sort()).toEqual([false, true]);
      expect(a.port).toBe(b.port);
      expect(a.connectionString).toBe(b.connectionString);
    } finally {
      await a.stop();
      await b.stop();
      await rm(a.pgdata, { recursive: true, force: true });
      await rm(`${a.pgdata}.log`, { force: true });
    }
    expect(await readPostmasterPid(a.pgdata)).toBeUndefined();
  });
});
