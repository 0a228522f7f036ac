import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, TEST_DATABASE_URL, type TestDb, template } from '../support/db.js';

/**
 * The references request_templates.file_id → files and requests.batch_id → batches are checked per
 * statement by triggers (migrations/0025_reference_checks.sql), not by foreign keys: each guarantee
 * a foreign key gave is held here, for both references, concurrent deletes included.
 */

interface Reference {
  child: 'request_templates' | 'requests';
  parent: 'files' | 'batches';
  column: 'file_id' | 'batch_id';
  /** A new parent row (committed through `c`'s transaction state); returns its id. */
  makeParent(c: pg.Pool): Promise<string>;
  /** The INSERT of child rows, one per parent id given ($1 uuid[]). */
  insertChildren(s: string): string;
}

const ABSENT = '00000000-0000-4000-8000-00000000dead';

let db: TestDb;
let s: string;
let route: number;
let line = 0;
/** A fresh range of line numbers (unique per file and per batch). */
const nextLines = (): number => {
  line += 1000;
  return line;
};

const REFERENCES: Reference[] = [
  {
    child: 'request_templates',
    parent: 'files',
    column: 'file_id',
    makeParent: async (c) =>
      (await c.query(`INSERT INTO ${s}.files (name) VALUES ('f') RETURNING id`)).rows[0].id,
    insertChildren: (schema) => `
      INSERT INTO ${schema}.request_templates (file_id, line_number, endpoint, method, path, body, model)
      SELECT f, ${nextLines()} + n, 'http://127.0.0.1:9', 'POST', '/v1/chat/completions', '{}', 'm'
        FROM unnest($1::uuid[]) WITH ORDINALITY AS x(f, n)`,
  },
  {
    child: 'requests',
    parent: 'batches',
    column: 'batch_id',
    makeParent: async (c) => {
      const file = (await c.query(`INSERT INTO ${s}.files (name) VALUES ('f') RETURNING id`)).rows[0].id;
      return (
        await c.query(
          `INSERT INTO ${s}.batches (file_id, completion_window, expires_at) VALUES ($1, NULL, NULL) RETURNING id`,
          [file],
        )
      ).rows[0].id;
    },
    insertChildren: (schema) => `
      INSERT INTO ${schema}.requests (batch_id, template_id, line_number, model, route_id)
      SELECT b, gen_random_uuid(), ${nextLines()} + n, 'm', ${route}
        FROM unnest($1::uuid[]) WITH ORDINALITY AS x(b, n)`,
  },
];

beforeAll(async () => {
  db = await createTestDb();
  s = `"${db.schema}"`;
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.upstream_routes (upstream, credential) VALUES ('http://127.0.0.1:9', 'none') RETURNING id`,
  );
  route = rows[0].id;
});
afterAll(() => db.close());

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  return c;
}

async function count(ref: Reference, parent: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM ${s}.${ref.child} WHERE ${ref.column} = $1`,
    [parent],
  );
  return rows[0].n;
}

/** The error a statement ends with (its SQLSTATE), or undefined when it succeeds. */
async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

/** Waits until `waiter`'s backend is blocked by `holder`'s (a lock wait, not a number of milliseconds). */
async function blockedBy(waiter: number, holder: number): Promise<void> {
  await expect
    .poll(
      async () =>
        (await db.pool.query('SELECT $2::int = ANY (pg_blocking_pids($1)) AS b', [waiter, holder])).rows[0].b,
      { timeout: 60_000 },
    )
    .toBe(true);
}

const pidOf = async (c: pg.Client): Promise<number> =>
  (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p;

describe.each(REFERENCES)('$child.$column → $parent', (ref) => {
  it('refuses rows that refer to a missing row, with the statement’s other rows', async () => {
    const parent = await ref.makeParent(db.pool);
    expect(await codeOf(db.pool.query(ref.insertChildren(s), [[ABSENT]]))).toBe('23503');
    expect(await codeOf(db.pool.query(ref.insertChildren(s), [[parent, ABSENT, parent]]))).toBe('23503');
    expect(await count(ref, parent)).toBe(0);
    await db.pool.query(ref.insertChildren(s), [[parent, parent]]);
    expect(await count(ref, parent)).toBe(2);
  });

  it('refuses to delete or truncate the referenced row while rows refer to it', async () => {
    const parent = await ref.makeParent(db.pool);
    await db.pool.query(ref.insertChildren(s), [[parent]]);
    expect(await codeOf(db.pool.query(`DELETE FROM ${s}.${ref.parent} WHERE id = $1`, [parent]))).toBe(
      '23503',
    );
    // In a statement of several parts, as the purge's deletes are.
    expect(
      await codeOf(
        db.pool.query(
          `WITH gone AS (DELETE FROM ${s}.${ref.parent} WHERE id = $1 RETURNING 1) SELECT count(*) FROM gone`,
          [parent],
        ),
      ),
    ).toBe('23503');
    // TRUNCATE … CASCADE follows the remaining foreign keys, not these references: refused while
    // children remain (in a transaction rolled back, the other tests' rows stay).
    const c = await connect();
    try {
      await c.query('BEGIN');
      expect(await codeOf(c.query(`TRUNCATE ${s}.${ref.parent} CASCADE`))).toBe('23503');
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query(`TRUNCATE ${s}.${ref.parent}, ${s}.requests, ${s}.request_templates CASCADE`);
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
    await db.pool.query(`DELETE FROM ${s}.${ref.child} WHERE ${ref.column} = $1`, [parent]);
    await db.pool.query(`DELETE FROM ${s}.${ref.parent} WHERE id = $1`, [parent]);
    expect((await db.pool.query(`SELECT 1 FROM ${s}.${ref.parent} WHERE id = $1`, [parent])).rowCount).toBe(
      0,
    );
  });

  it('refuses to change the referencing column or the referenced id', async () => {
    const [a, b] = [await ref.makeParent(db.pool), await ref.makeParent(db.pool)];
    await db.pool.query(ref.insertChildren(s), [[a]]);
    expect(
      await codeOf(
        db.pool.query(`UPDATE ${s}.${ref.child} SET ${ref.column} = $2 WHERE ${ref.column} = $1`, [a, b]),
      ),
    ).toBe('23503');
    expect(
      await codeOf(db.pool.query(`UPDATE ${s}.${ref.parent} SET id = $2 WHERE id = $1`, [b, ABSENT])),
    ).toBe('23503');
    // Setting an id to itself (as the checks do) changes nothing and passes.
    await db.pool.query(`UPDATE ${s}.${ref.parent} SET id = id WHERE id = $1`, [a]);
    expect(await count(ref, a)).toBe(1);
  });

  it('a delete waiting on an insert that commits fails; an insert waiting on a delete that commits fails', async () => {
    const inserter = await connect();
    const deleter = await connect();
    // Asked now: a client's next query waits behind the one it is blocked in.
    const [inserterPid, deleterPid] = [await pidOf(inserter), await pidOf(deleter)];
    try {
      // The insert first: the delete waits for its transaction, then finds the new rows.
      const first = await ref.makeParent(db.pool);
      await inserter.query('BEGIN');
      await inserter.query(ref.insertChildren(s), [[first]]);
      const deleted = codeOf(deleter.query(`DELETE FROM ${s}.${ref.parent} WHERE id = $1`, [first]));
      await blockedBy(deleterPid, inserterPid);
      await inserter.query('COMMIT');
      expect(await deleted).toBe('23503');
      expect(await count(ref, first)).toBe(1);

      // The delete first: the insert waits for its transaction, then finds the row gone.
      const second = await ref.makeParent(db.pool);
      await deleter.query('BEGIN');
      await deleter.query(`DELETE FROM ${s}.${ref.parent} WHERE id = $1`, [second]);
      const inserted = codeOf(inserter.query(ref.insertChildren(s), [[second]]));
      await blockedBy(inserterPid, deleterPid);
      await deleter.query('COMMIT');
      expect(await inserted).toBe('23503');
      expect(await count(ref, second)).toBe(0);
    } finally {
      await inserter.end();
      await deleter.end();
    }
  });

  it('a REPEATABLE READ delete that cannot see rows committed since its snapshot fails to serialize', async () => {
    const inserter = await connect();
    const deleter = await connect();
    try {
      const parent = await ref.makeParent(db.pool);
      await deleter.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await deleter.query(`SELECT 1 FROM ${s}.${ref.parent} WHERE id = $1`, [parent]); // the snapshot
      await inserter.query(ref.insertChildren(s), [[parent]]);
      expect(await codeOf(deleter.query(`DELETE FROM ${s}.${ref.parent} WHERE id = $1`, [parent]))).toBe(
        '40001',
      );
      await deleter.query('ROLLBACK');
      expect(await count(ref, parent)).toBe(1);
    } finally {
      await inserter.end();
      await deleter.end();
    }
  });
});

describe('the store paths through the checks', () => {
  it('stores a file and creates its batch; neither can then be deleted', async () => {
    const m = db.manager();
    const fileId = await m.createFile('f', null, [template(1), template(2)]);
    const batchId = await m.createBatch(fileId);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.requests WHERE batch_id = $1`, [
      batchId,
    ]);
    expect(rows[0].n).toBe(2);
    expect(await codeOf(db.pool.query(`DELETE FROM ${s}.batches WHERE id = $1`, [batchId]))).toBe('23503');
    await db.pool.query(`DELETE FROM ${s}.batch_models WHERE batch_id = $1`, [batchId]);
    await db.pool.query(`DELETE FROM ${s}.batch_routes WHERE batch_id = $1`, [batchId]);
    await db.pool.query(`DELETE FROM ${s}.requests WHERE batch_id = $1`, [batchId]);
    await db.pool.query(`DELETE FROM ${s}.batches WHERE id = $1`, [batchId]);
    expect(await codeOf(db.pool.query(`DELETE FROM ${s}.files WHERE id = $1`, [fileId]))).toBe('23503');
  });
});
