/**
 * A daemon alone in its process, for the memory bench (its RSS is the daemon's, not the harness's).
 * Env: DATABASE_URL, SCHEMA, LIMIT (default in-flight limit). Prints "ready" once running; stops on
 * SIGTERM.
 */
import pg from 'pg';
import { PostgresRequestManager } from '../src/manager/request-manager.js';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 6 });
const manager = new PostgresRequestManager(pool, {
  schema: process.env.SCHEMA!,
  defaultModelConcurrency: Number(process.env.LIMIT ?? 64),
  logger: () => {},
});
const daemon = await manager.run({ handleSignals: true });
process.stdout.write('ready\n');
await daemon.done;
await pool.end();
