/**
 * One reader of a batch's completed results, alone in its process so its memory is its own
 * (bench/batch-results.ts). MODE=library: `manager.getBatchResults(batchId, { include: 'completed' })`,
 * counting lines and bytes; MODE=copy: a raw `COPY (SELECT response_body …) TO STDOUT` of the same
 * rows through pg-copy-streams, counting bytes and rows. RSS is sampled every 20 ms in-process.
 * Env: DATABASE_URL, SCHEMA, BATCH, MODE. Sends {seconds, lines, bytes, rssStartMB, rssPeakMB} over IPC.
 */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';

const MB = 1024 * 1024;
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL!, max: 2 });
const schema = process.env.SCHEMA!;
const batchId = process.env.BATCH!;
const mode = process.env.MODE!;

// Warm the pool and the modules first, so the start figure is the reader's idle size.
await pool.query('SELECT 1');
const manager = new PostgresRequestManager(pool, { schema });
global.gc?.();
const rssStart = process.memoryUsage.rss();
let rssPeak = rssStart;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
}, 20);

let lines = 0;
let bytes = 0;
const started = performance.now();
if (mode === 'library') {
  for await (const line of manager.getBatchResults(batchId, { include: 'completed' })) {
    lines++;
    bytes += line.length + 1;
  }
} else {
  const client = await pool.connect();
  const stream = client.query(
    copyTo(
      `COPY (SELECT response_body FROM "${schema}".requests WHERE batch_id = '${batchId}' AND state = 'completed') TO STDOUT`,
    ),
  );
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
  }
  client.release();
}
const seconds = (performance.now() - started) / 1000;
clearInterval(sampler);
rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
await pool.end();
process.send!({ seconds, lines, bytes, rssStartMB: rssStart / MB, rssPeakMB: rssPeak / MB });
process.disconnect();
