/**
 * The API server in a process of its own, so the bench measures the server's memory alone.
 * Parent ↔ child over IPC: the child sends {url}; on {type:'reset'} it restarts peak tracking and
 * on {type:'peak'} it answers {baseline, peak} resident set sizes in bytes.
 */
import pg from 'pg';
import { createServer } from '../src/server/server.js';

const { DATABASE_URL, BENCH_SCHEMA } = process.env;
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
const server = await createServer({
  pool,
  schema: BENCH_SCHEMA,
  port: 0,
  daemon: false,
  routing: { upstream: 'http://127.0.0.1:9' },
});

let baseline = process.memoryUsage.rss();
let peak = baseline;
setInterval(() => {
  peak = Math.max(peak, process.memoryUsage.rss());
}, 10).unref();

process.on('message', async (msg: { type: string }) => {
  if (msg.type === 'reset') {
    global.gc?.();
    baseline = process.memoryUsage.rss();
    peak = baseline;
    process.send!({ type: 'reset', baseline });
  } else if (msg.type === 'peak') {
    peak = Math.max(peak, process.memoryUsage.rss());
    process.send!({ type: 'peak', baseline, peak });
  } else if (msg.type === 'close') {
    await server.close();
    await pool.end();
    process.exit(0);
  }
});
process.send!({ type: 'ready', url: server.url });
