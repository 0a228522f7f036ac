import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { assertSchemaName, DEFAULT_SCHEMA } from './schema.js';
import { inTransaction } from './transaction.js';

/** Migrations ship as numbered plain-SQL files: `migrations/0001_init.sql`, `0002_...`. */
function migrationsDir(): string {
  // dist/src/db/migrate.js and src/db/migrate.ts both sit three levels below the package root.
  const here = dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${join('dist', 'src')}`) ? ['..', '..', '..'] : ['..', '..'];
  return join(here, ...up, 'migrations');
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The migration files' names, in order (`0001_init.sql`, …): their versions without reading them. */
async function migrationNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => /^\d{4}_[\w-]+\.sql$/.test(n)).sort();
}

export async function loadMigrations(dir = migrationsDir()): Promise<Migration[]> {
  const names = await migrationNames(dir);
  return Promise.all(
    names.map(async (name) => ({
      version: Number(name.slice(0, 4)),
      name,
      sql: await readFile(join(dir, name), 'utf8'),
    })),
  );
}

export interface MigrateOptions {
  /** Schema holding fusillade's tables (default "fusillade"). */
  schema?: string;
}

/**
 * Brings the schema up to date. Safe to call from many processes at once: a transaction-scoped
 * advisory lock serialises them, and whoever comes second finds nothing left to do. Each migration
 * runs in the same transaction, so a failure leaves the schema as it was.
 * Returns the versions applied by this call.
 */
export async function migrate(pool: pg.Pool | pg.Client, options: MigrateOptions = {}): Promise<number[]> {
  const schema = assertSchemaName(options.schema ?? DEFAULT_SCHEMA);
  const versions = (await migrationNames(migrationsDir())).map((n) => Number(n.slice(0, 4)));
  if (await upToDate(pool, schema, versions)) return [];
  const migrations = await loadMigrations();
  const pooled = 'totalCount' in pool ? await pool.connect() : undefined;
  const client: pg.ClientBase = pooled ?? (pool as pg.Client);
  try {
    return await inTransaction(client, async () => {
      const applied: number[] = [];
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`fusillade.migrate:${schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      await client.query(`SET LOCAL search_path TO "${schema}", public`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
      const done = new Set(rows.map((r) => r.version));
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        await client.query(m.sql);
        await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
          m.version,
          m.name,
        ]);
        applied.push(m.version);
      }
      return applied;
    });
  } finally {
    pooled?.release();
  }
}

/**
 * Whether every migration is recorded already: one statement, so that the usual start (a command
 * on a migrated schema) skips the transaction's six more round trips, its advisory lock and its
 * CREATE … IF NOT EXISTS (which take locks of their own); `fusillade run` waits for them before it
 * stores its input (the files are read only when one is missing). Migrations are only ever added, so "all recorded" stays true once read. A
 * schema or table not created yet (its first migration) reads as not up to date.
 */
async function upToDate(db: pg.Pool | pg.Client, schema: string, wanted: number[]): Promise<boolean> {
  let versions: number[];
  try {
    const { rows } = await db.query<{ version: number }>(`SELECT version FROM "${schema}".schema_migrations`);
    versions = rows.map((r) => r.version);
  } catch (err) {
    const code = (err as { code?: string }).code;
    // undefined_table, invalid_schema_name: not migrated yet.
    if (code === '42P01' || code === '3F000') return false;
    throw err;
  }
  const done = new Set(versions);
  return wanted.every((v) => done.has(v));
}
