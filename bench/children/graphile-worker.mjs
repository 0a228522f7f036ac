/**
 * graphile-worker 0.17.3 doing `fusillade run`'s job, as a process of its own (plain JavaScript, no
 * TypeScript loader), in its own schema:
 *
 *   node graphile-worker.mjs DATABASE_URL SCHEMA --migrate
 *       installs graphile-worker's schema and a results table (untimed, as `fusillade migrate` is);
 *   node graphile-worker.mjs DATABASE_URL SCHEMA UPSTREAM CONCURRENCY --input IN.jsonl --output OUT.jsonl
 *       adds one job per line (one addJobs call), runs a worker that POSTs each job's body to the
 *       upstream with one undici Pool and stores the answer in the results table (the job's own
 *       completion is graphile-worker's), stops when every job succeeded, then writes the answers
 *       as output lines.
 *
 * Tuned as its docs (worker.graphile.org/docs/performance, the option comments of 0.17) advise for
 * many small, fast jobs: a local queue that fetches and locks jobs in batches
 * (`localQueue.size`), batched completion (`completeJobBatchDelay: 0`, `failJobBatchDelay: 0`),
 * `concurrentJobs` = the concurrency, `maxPoolSize` = concurrentJobs + 2 (the docs' advice when
 * tasks use the pool, as the result INSERT does), prepared statements on (the default),
 * `useNodeTime` (no clock read from PostgreSQL), LISTEN/NOTIFY on (the default) with the default
 * 2 s poll as fallback. The local queue holds concurrentJobs + 1 jobs (the docs' starting point);
 * GRAPHILE_LOCAL_QUEUE overrides it. 500 (the docs allow "a much higher number" for very fast
 * tasks) was slower: 5,000 jobs × 0 ms at 64, alternating, load ≈ 17 on the 2-core machine:
 * 33.4 / 54.7 s against 23.4 / 49.2 s with 65.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { makeWorkerUtils, run, runMigrations } from 'graphile-worker';
import pg from 'pg';
import { Pool } from 'undici';

const [connectionString, schema, ...rest] = process.argv.slice(2);
if (!connectionString || !/^[a-z_][a-z0-9_]*$/.test(schema ?? '')) {
  console.error(
    'usage: graphile-worker.mjs DATABASE_URL SCHEMA (--migrate | UPSTREAM CONCURRENCY --input IN --output OUT)',
  );
  process.exit(2);
}
const results = `"${schema}".bench_results`;
const quiet = () => () => {};
const logger = { scope: () => logger, error: console.error, warn: quiet(), info: quiet(), debug: quiet() };

if (rest[0] === '--migrate') {
  await runMigrations({ connectionString, schema });
  const client = new pg.Client({ connectionString });
  await client.connect();
  await client.query(
    `CREATE TABLE ${results} (custom_id text PRIMARY KEY, status_code integer NOT NULL, body text NOT NULL)`,
  );
  await client.end();
  process.exit(0);
}

const [upstream, concurrencyText, inFlag, inPath, outFlag, outPath] = rest;
const concurrency = Number(concurrencyText);
if (!upstream || !(concurrency > 0) || inFlag !== '--input' || outFlag !== '--output' || !outPath) {
  console.error(
    'usage: graphile-worker.mjs DATABASE_URL SCHEMA UPSTREAM CONCURRENCY --input IN --output OUT',
  );
  process.exit(2);
}
const http = new Pool(upstream, { connections: concurrency, pipelining: 1 });

const specs = [];
const lines = createInterface({ input: createReadStream(inPath), crlfDelay: Number.POSITIVE_INFINITY });
for await (const text of lines) {
  if (!text) continue;
  const line = JSON.parse(text);
  specs.push({ identifier: 'post', payload: { c: line.custom_id, u: line.url, b: line.body } });
}

const utils = await makeWorkerUtils({ connectionString, schema });
await utils.addJobs(specs);
await utils.release();

let succeeded = 0;
let resolveAll;
const allDone = new Promise((resolve) => {
  resolveAll = resolve;
});
const runner = await run({
  noHandleSignals: true,
  logger,
  preset: {
    worker: {
      connectionString,
      schema,
      concurrentJobs: concurrency,
      maxPoolSize: concurrency + 2,
      useNodeTime: true,
      preparedStatements: true,
      localQueue: { size: Number(process.env.GRAPHILE_LOCAL_QUEUE ?? concurrency + 1) },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  },
  taskList: {
    async post(payload, helpers) {
      const res = await http.request({
        method: 'POST',
        path: payload.u,
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench' },
        body: JSON.stringify(payload.b),
      });
      const body = await res.body.text();
      await helpers.query(`INSERT INTO ${results} (custom_id, status_code, body) VALUES ($1, $2, $3)`, [
        payload.c,
        res.statusCode,
        body,
      ]);
    },
  },
});
runner.events.on('job:success', () => {
  if (++succeeded === specs.length) resolveAll();
});
runner.events.on('job:error', ({ error }) => console.error(`job failed: ${error?.message ?? error}`));
await allDone;
await runner.stop();
await http.close();

const reader = new pg.Client({ connectionString });
await reader.connect();
const { rows } = await reader.query(`SELECT custom_id, status_code, body FROM ${results}`);
await reader.end();
const out = createWriteStream(outPath);
for (const r of rows) {
  const line = `{"custom_id":${JSON.stringify(r.custom_id)},"response":{"status_code":${r.status_code},"body":${r.body}}}\n`;
  if (!out.write(line)) await once(out, 'drain');
}
out.end();
await once(out, 'finish');
