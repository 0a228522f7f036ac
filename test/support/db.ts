import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { type ManagerConfig, PostgresRequestManager } from '../../src/manager/request-manager.js';

/** The PostgreSQL every test talks to (CI and developers have it at 127.0.0.1:5432, trust auth). */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDb {
  pool: pg.Pool;
  schema: string;
  manager(config?: ManagerConfig): PostgresRequestManager;
  close(): Promise<void>;
}

/** A pool, a second client to hold locks with, and a scratch table `n int` of their own. */
export interface LockScratch {
  pool: pg.Pool;
  locker: pg.Client;
  table: string;
  close(): Promise<void>;
}

/** For tests of src/db's helpers against work that waits on a lock: table `${prefix}_<random>`. */
export async function createLockScratch(prefix: string): Promise<LockScratch> {
  const table = `${prefix}_${randomBytes(6).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  const locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await locker.connect();
  await pool.query(`CREATE TABLE ${table} (n int)`);
  return {
    pool,
    locker,
    table,
    async close() {
      await locker.query('ROLLBACK').catch(() => {});
      await locker.end().catch(() => {});
      await pool.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
      await pool.end();
    },
  };
}

/** A fresh, migrated schema of its own, so test files run in parallel and repeatedly. */
export async function createTestDb(options: { max?: number } = {}): Promise<TestDb> {
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: options.max ?? 10 });
  await migrate(pool, { schema });
  return {
    pool,
    schema,
    manager: (config = {}) => new PostgresRequestManager(pool, { schema, ...config }),
    async close() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await pool.end();
    },
  };
}

export function template(
  i: number,
  overrides: Partial<import('../../src/domain/templates.js').RequestTemplateInput> = {},
) {
  return {
    endpoint: 'http://127.0.0.1:9',
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: `hello ${i}` }] }),
    model: 'gpt-test',
    apiKey: 'sk-upstream-secret',
    customId: `req-${i}`,
    ...overrides,
  };
}
