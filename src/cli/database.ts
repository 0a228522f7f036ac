import pg from 'pg';
import { redactUrl, type Settings } from '../config/settings.js';
import { UsageError } from '../config/usage-error.js';
import { migrate } from '../db/migrate.js';
import type { EmbeddedPostgres } from '../embedded/embedded-postgres.js';
import { PostgresRequestManager } from '../manager/request-manager.js';

/** The settings that say where the database is. */
export type DatabaseSettings = Pick<Settings, 'databaseUrl' | 'schema' | 'dataDir' | 'embeddedUser'> &
  Partial<Pick<Settings, 'directDatabaseUrl' | 'poolSize'>>;

export interface Database {
  pool: pg.Pool;
  schema: string;
  /** Where the data lives, for messages (never the password). */
  describe: string;
  embedded?: EmbeddedPostgres;
  close(): Promise<void>;
}

/** How long opening a connection may take before it fails (a host that drops packets, a hung server). */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The database of `--database-url` (or DATABASE_URL), else the embedded PostgreSQL in `--data-dir`;
 * migrated unless `migrate: false` (through `--direct-database-url` when given: the pool's URL is
 * then a transaction pooler). The pool holds at most `--pool-size` connections, else
 * `options.poolSize` (the command's default), else 20. An unreachable database is a one-line UsageError, within
 * `connectTimeoutMs` when it does not answer at all. The pool's sockets use TCP keepalive, so a
 * connection silently dropped by the network (NAT, firewall, failover) is noticed and replaced.
 */
export async function openDatabase(
  settings: DatabaseSettings,
  options: {
    log?: (m: string) => void;
    poolSize?: number;
    migrate?: boolean;
    connectTimeoutMs?: number;
  } = {},
): Promise<Database> {
  const connectTimeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  let embedded: EmbeddedPostgres | undefined;
  let url = settings.databaseUrl;
  const direct = settings.directDatabaseUrl;
  if (direct !== undefined && url === undefined) {
    throw new UsageError(
      '--direct-database-url needs --database-url (the pooler); the embedded PostgreSQL needs neither',
    );
  }
  if (url === undefined) {
    try {
      // Loaded only for the embedded server: 6.6–8.2 ms of CPU (with pg loaded already, alone in a
      // fresh process) that a command with --database-url spent before its first statement.
      const { startEmbeddedPostgres } = await import('../embedded/embedded-postgres.js');
      embedded = await startEmbeddedPostgres({
        dataDir: settings.dataDir,
        ...(settings.embeddedUser ? { user: settings.embeddedUser } : {}),
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
    max: settings.poolSize ?? options.poolSize ?? 20,
    application_name: 'fusillade',
    connectionTimeoutMillis: connectTimeoutMs,
    keepAlive: true,
    // JIT compiling pays off only for long analytical queries: on a large table it fired on the
    // dashboard's and the API's reads and cost more than it saved. Set at connection start; a
    // transaction pooler (PgBouncer 1.18) refuses startup options, so behind one it is the role's
    // (or database's) setting, `ALTER ROLE … SET jit = off`, which its server connections start
    // with, and openDatabase says so when it finds JIT on there (README: Connections). A `SET jit`
    // per transaction was the alternative: one more round trip for every statement the pool sends
    // outside a transaction (most reads and every claim), or a change of session state that the
    // pooler would hand to the next client.
    ...(direct === undefined ? { options: '-c jit=off' } : {}),
  });
  // An idle client's connection dropping (server restart) must not crash the process.
  pool.on('error', () => {});
  const close = async () => {
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
  };
  try {
    const client = await pool.connect();
    try {
      if (direct !== undefined && (await client.query('SHOW jit')).rows[0]?.jit !== 'off') {
        options.log?.(
          'jit is on for the connections through --database-url (a pooler passes no start-up options): ' +
            'run ALTER ROLE <role> SET jit = off once (README: Connections)',
        );
      }
    } finally {
      client.release();
    }
    if (options.migrate !== false) await migrateWith(direct, pool, settings.schema, connectTimeoutMs);
  } catch (err) {
    await close();
    if (err instanceof UsageError) throw err;
    const message = (err as Error).message ?? String(err);
    // pg-pool: "timeout exceeded when trying to connect"; pg: "Connection terminated due to connection timeout".
    const why = /timeout/i.test(message)
      ? `no answer within ${connectTimeoutMs / 1000} s (is it running and reachable?)`
      : message;
    throw new UsageError(`cannot use the database at ${describe}: ${why.split('\n')[0]}`, 1);
  }
  return { pool, schema: settings.schema, describe, close, ...(embedded ? { embedded } : {}) };
}

/**
 * Runs an operator's command (`keys`, `webhooks`, `purge`) through the library's manager on the
 * database of the settings, opened with a pool of 2 and closed afterwards, whatever happens. These
 * commands seal nothing, so the manager reads no key-encryption key (a malformed one in the
 * environment is not theirs to refuse).
 */
export async function withManager<T>(
  settings: DatabaseSettings,
  fn: (manager: PostgresRequestManager) => Promise<T>,
): Promise<T> {
  const db = await openDatabase(settings, { poolSize: 2, log: (m) => console.error(m) });
  try {
    return await fn(new PostgresRequestManager(db.pool, { schema: db.schema, keyEncryptionKey: null }));
  } finally {
    await db.close();
  }
}

/**
 * Migrates through the direct URL when there is one (a session of its own, as migrations' lock and
 * DDL expect), else through the pool. Returns the versions applied.
 */
export async function migrateWith(
  direct: string | undefined,
  pool: pg.Pool,
  schema: string,
  connectTimeoutMs = CONNECT_TIMEOUT_MS,
): Promise<number[]> {
  if (direct === undefined) return migrate(pool, { schema });
  const client = new pg.Client({
    connectionString: direct,
    application_name: 'fusillade',
    connectionTimeoutMillis: connectTimeoutMs,
  });
  await client.connect();
  try {
    return await migrate(client, { schema });
  } finally {
    await client.end().catch(() => {});
  }
}
