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

export async function loadMigrations(dir = migrationsDir()): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => /^\d{4}_[\w-]+\.sql$/.test(n)).sort();
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
