/**
 * A library daemon (`manager.run()`) alone in its process, so the benches measure its CPU and memory
 * apart from the harness and the mock. Env: DATABASE_URL, SCHEMA, APP (the pool's application_name,
 * so the harness finds this daemon's PostgreSQL backends), CONFIG (JSON ManagerConfig overrides),
 * POOL_MAX. Over IPC: sends {type:'ready', id}; answers {type:'cpu'} with process.cpuUsage() (µs) and
 * {type:'rss'} with its resident set size; {type:'stop'} stops the daemon and exits.
 */
import pg from 'pg';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';

const url = new URL(process.env.DATABASE_URL!);
if (process.env.APP) url.searchParams.set('application_name', process.env.APP);
const pool = new pg.Pool({ connectionString: url.toString(), max: Number(process.env.POOL_MAX ?? 10) });
pool.on('error', () => {});
const config = JSON.parse(process.env.CONFIG ?? '{}') as Record<string, unknown>;
const manager = new PostgresRequestManager(pool, {
  schema: process.env.SCHEMA!,
  logger: () => {},
  ...config,
});
const daemon = await manager.run();

process.on('message', async (msg: { type: string }) => {
  if (msg.type === 'cpu') process.send!({ type: 'cpu', ...process.cpuUsage() });
  else if (msg.type === 'rss') process.send!({ type: 'rss', rss: process.memoryUsage.rss() });
  else if (msg.type === 'stop') {
    await daemon.stop();
    await pool.end();
    process.send!({ type: 'stopped' });
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
process.send!({ type: 'ready', id: daemon.id });
