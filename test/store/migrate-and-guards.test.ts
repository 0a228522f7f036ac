import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb, template } from '../support/db.js';

describe('migrate', () => {
  it('lets concurrent callers wait for each other; the second run is a no-op', async () => {
    const schema = `t_${randomBytes(6).toString('hex')}`;
    // Separate pools stand for replicas starting at the same moment.
    const pools = Array.from(
      { length: 6 },
      () => new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 }),
    );
    try {
      const results = await Promise.all(pools.map((p) => migrate(p, { schema })));
      const all = (await loadMigrations()).map((m) => m.version);
      expect(results.filter((r) => r.length > 0)).toEqual([all]);
      expect(await migrate(pools[0]!, { schema })).toEqual([]);
      const { rows } = await pools[0]!.query(
        `SELECT version FROM "${schema}".schema_migrations ORDER BY version`,
      );
      expect(rows.map((r) => r.version)).toEqual(all);
    } finally {
      await pools[0]!.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('reads an up-to-date schema with one statement, and takes the whole path for a version not recorded', async () => {
    const schema = `t_${randomBytes(6).toString('hex')}`;
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    const sent: string[] = [];
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      sent.push(typeof args[0] === 'string' ? args[0] : (args[0] as { text: string }).text);
      return query(...args);
    };
    try {
      const all = (await loadMigrations()).map((m) => m.version);
      expect(await migrate(client, { schema })).toEqual(all);
      sent.length = 0;
      expect(await migrate(client, { schema })).toEqual([]);
      expect(sent).toEqual([`SELECT version FROM "${schema}".schema_migrations`]);
      // A version not recorded (as after an upgrade) takes the whole path: the advisory lock, then
      // the migration (which may or may not run twice: only the path is checked here).
      const last = all[all.length - 1]!;
      await client.query(`DELETE FROM "${schema}".schema_migrations WHERE version = $1`, [last]);
      sent.length = 0;
      await migrate(client, { schema }).catch(() => {});
      expect(sent.some((q) => q.includes('pg_advisory_xact_lock'))).toBe(true);
    } finally {
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    }
  });

  it('rejects a schema name that cannot be inlined safely', async () => {
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
    try {
      await expect(migrate(pool, { schema: 'x"; DROP TABLE y; --' })).rejects.toThrow(/invalid schema name/);
    } finally {
      await pool.end();
    }
  });
});

describe('guarded request state', () => {
  let db: TestDb;
  beforeAll(async () => {
    db = await createTestDb();
  });
  afterAll(() => db.close());

  async function oneRequest() {
    const m = db.manager();
    const batchId = await m.createBatch(await m.createFile('f', null, [template(1)]));
    const { rows } = await db.pool.query(`SELECT id FROM ${m.schema}.requests WHERE batch_id = $1`, [
      batchId,
    ]);
    return { m, batchId, id: rows[0].id as string };
  }

  it('refuses fields that do not belong to a state (CHECK constraints)', async () => {
    const { m, id } = await oneRequest();
    await expect(
      db.pool.query(`UPDATE ${m.schema}.requests SET state = 'completed' WHERE id = $1`, [id]),
    ).rejects.toThrow(/check constraint/);
    await expect(
      db.pool.query(`UPDATE ${m.schema}.requests SET state = 'processing' WHERE id = $1`, [id]),
    ).rejects.toThrow(/check constraint/);
  });

  it('never lets a write overwrite a terminal row, even an unguarded one', async () => {
    const { m, id } = await oneRequest();
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'canceled', completed_at = now(), error_code = 'batch_cancelled' WHERE id = $1`,
      [id],
    );
    // A stale daemon's completion without the guard: the trigger refuses it.
    await expect(
      db.pool.query(
        `UPDATE ${m.schema}.requests SET state = 'completed', response_status = 200, response_body = '{}' WHERE id = $1`,
        [id],
      ),
    ).rejects.toThrow(/is canceled, it cannot become completed/);
    const { rows } = await db.pool.query(`SELECT state FROM ${m.schema}.requests WHERE id = $1`, [id]);
    expect(rows[0].state).toBe('canceled');
  });

  it('lets a failed row be requeued but not completed behind the retry', async () => {
    const { m, batchId, id } = await oneRequest();
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'failed', completed_at = now(), response_status = 400, response_body = '{}' WHERE id = $1`,
      [id],
    );
    await expect(
      db.pool.query(`UPDATE ${m.schema}.requests SET state = 'completed' WHERE id = $1`, [id]),
    ).rejects.toThrow(/cannot become completed/);
    expect(await m.retryFailedRequests(batchId)).toBe(1);
    // Requeueing again finds nothing failed: the write is guarded on the state it expects.
    expect(await m.retryFailedRequests(batchId)).toBe(0);
  });
});
