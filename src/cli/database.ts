import pg from 'pg';
import { redactUrl, type Settings } from '../config/settings.js';
import { UsageError } from '../config/usage-error.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../embedded/embedded-postgres.js';
import { migrate } from '../store/migrate.js';

export interface Database {
  pool: pg.Pool;
  schema: string;
  /** Where the data lives, for messages (never the password). */
  describe: string;
  embedded?: EmbeddedPostgres;
  close(): Promise<void>;
}

/**
 * The database of `--database-url` (or DATABASE_URL), else the embedded PostgreSQL in `--data-dir`;
 * migrated unless `migrate: false`. An unreachable database is a one-line UsageError.
 */
export async function openDatabase(
  settings: Settings,
  options: { log?: (m: string) => void; poolSize?: number; migrate?: boolean } = {},
): Promise<Database> {
  let embedded: EmbeddedPostgres | undefined;
  let url = settings.databaseUrl;
  if (url === undefined) {
    try {
      embedded = await startEmbeddedPostgres({
        dataDir: settings.dataDir,
        ...(options.log ? { log: options.log } : {}),
      });
    } catch (err) {
      throw new UsageError(`embedded PostgreSQL in ${settings.dataDir}: ${(err as Error).message}`, 1);
    }
    url = embedded.connectionString;
  }
  const describe = embedded ? `embedded PostgreSQL in ${embedded.dataDir}` : redactUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize ?? 20,
    application_name: 'fusillade',
    connectionTimeoutMillis: 10_000,
  });
  // An idle client's connection dropping (server restart) must not crash the process.
  pool.on('error', () => {});
  const close = async () => {
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
  };
  try {
    const client = await pool.connect();
    client.release();
    if (options.migrate !== false) await migrate(pool, { schema: settings.schema });
  } catch (err) {
    await close();
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot use the database at ${describe}: ${(err as Error).message}`, 1);
  }
  return { pool, schema: settings.schema, describe, close, ...(embedded ? { embedded } : {}) };
}
