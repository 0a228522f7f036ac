/**
 * The background compression pass (src/db/compress.ts, issue 14) while a live batch dispatches: the
 * hot path must not notice it. A library daemon in a process of its own dispatches a batch of LIVE
 * requests to the mock upstream (a process of its own, 0 ms answers, 64 in flight); its rate is
 * its size over its creation-to-end time (PostgreSQL's clock). Before each run an ended batch of
 * BACKLOG completed requests with ~1.45 KB word-salad JSON answers is inserted (untimed, no daemon
 * running). Runs alternate (a b b a): `quiet`, the daemon with compressFinishedBodies off;
 * `compressing`, the same daemon with it on (compressAfterMs 0, a pass every second), so the daemon
 * process that dispatches also compresses the backlog, in its maintenance loop, at the same time.
 *
 *   npm run bench -- compress-under-dispatch   (BENCH_LIVE, BENCH_BACKLOG)
 */
import { pathToFileURL } from 'node:url';
import { PostgresRequestManager } from '../src/manager/request-manager.js';
import { createTestDb } from '../test/support/db.js';
import { daemonBatch } from './daemon-throughput.js';
import { JIT_OFF_URL } from './support/big-database-build.js';
import { alternate, median, startDaemonProcess, startMockProcess } from './support/processes.js';

const ROUNDS = 2;
const MODEL = 'live-bench';
const WORDS = `'{the,of,and,to,in,a,is,that,for,it,as,with,be,on,not,this,are,by,at,from,or,have,an,they,which,
one,you,were,all,we,can,has,there,their,been,if,more,when,will,would,batch,request,answer,model,daemon}'::text[]`;

/** Inserts an ended batch of `n` completed requests with ~1.45 KB JSON answers. */
async function backlog(manager: PostgresRequestManager, n: number): Promise<string> {
  const s = manager.schema;
  const pool = manager.pool;
  const file = (
    await pool.query(
      `INSERT INTO ${s}.files (name, template_count) VALUES ('backlog.jsonl', $1) RETURNING id`,
      [n],
    )
  ).rows[0].id as string;
  await pool.query(
    `INSERT INTO ${s}.request_templates (file_id, line_number, custom_id, endpoint, method, path, body, model)
     SELECT $1, i, 'b-' || i, 'http://127.0.0.1:9', 'POST', '/v1/chat/completions',
            '{"model":"backlog","messages":[{"role":"user","content":"hello ' || i || '"}]}', 'backlog'
       FROM generate_series(1, $2) i`,
    [file, n],
  );
  const batch = (
    await pool.query(
      `INSERT INTO ${s}.batches (file_id, endpoint, total_requests, in_progress_at, expires_at)
       VALUES ($1, '/v1/chat/completions', $2, now(), now() + interval '24 hours') RETURNING id`,
      [file, n],
    )
  ).rows[0].id as string;
  await pool.query(
    `INSERT INTO ${s}.requests (batch_id, template_id, line_number, model, state, attempt, started_at,
                                completed_at, response_status, response_body)
     SELECT $1, t.id, t.line_number, 'backlog', 'completed', 1, now(), now(), 200,
            '{"id":"chatcmpl-' || t.line_number || '","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
            || (SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
                  FROM (SELECT ${WORDS} AS w) x, generate_series(1, 300 + t.line_number % 2) g)
            || '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":350,"total_tokens":600}}'
       FROM ${s}.request_templates t WHERE t.file_id = $2`,
    [batch, file],
  );
  if (!(await manager.finalizeBatch(batch))) throw new Error('the backlog batch did not end');
  return batch;
}

export async function benchCompressUnderDispatch(
  live = Number(process.env.BENCH_LIVE ?? 20_000),
  backlogRows = Number(process.env.BENCH_BACKLOG ?? 50_000),
): Promise<{ markdown: string }> {
  const db = await createTestDb({ max: 4 });
  const s = db.schema;
  const manager = new PostgresRequestManager(db.pool, { schema: s, logger: () => {} });
  const mock = await startMockProcess(0);
  const runs: { kind: string; rate: number; compressed: number; answerBytes: number }[] = [];
  try {
    const base = { modelConcurrencyLimits: { [MODEL]: 64 }, purgeIntervalMs: 1000, compressAfterMs: 0 };
    for (let i = 0; i < ROUNDS * 2; i++) {
      const [kind] = alternate(i, 'quiet', 'compressing');
      const old = await backlog(manager, backlogRows);
      const daemon = await startDaemonProcess({
        databaseUrl: JIT_OFF_URL,
        schema: s,
        config: { ...base, compressFinishedBodies: kind === 'compressing' },
      });
      try {
        if (i === 0) await daemonBatch(manager, mock.url, 2_000, MODEL); // warm-up, untimed
        const seconds = await daemonBatch(manager, mock.url, live, MODEL);
        const { rows } = await db.pool.query(
          `SELECT count(*) FILTER (WHERE response_body_z IS NOT NULL)::int AS n,
                  coalesce(avg(octet_length(response_body_z)), 0)::float8 AS z
             FROM ${s}.requests WHERE batch_id = $1`,
          [old],
        );
        runs.push({ kind, rate: live / seconds, compressed: rows[0].n, answerBytes: rows[0].z });
      } finally {
        await daemon.stop();
      }
      // Every run starts from the same state: the backlog goes, the pass has nothing left.
      await db.pool.query(`UPDATE ${s}.batches SET compressed_for = finished_at`);
      await db.pool.query(`VACUUM ${s}.requests`).catch(() => {});
    }
  } finally {
    await mock.close();
    await db.close();
  }
  const quiet = runs.filter((r) => r.kind === 'quiet');
  const busy = runs.filter((r) => r.kind === 'compressing');
  const q = median(quiet.map((r) => r.rate));
  const b = median(busy.map((r) => r.rate));
  const markdown = [
    '## Compression under dispatch (bench/compress-under-dispatch.ts)',
    '',
    `A ${live.toLocaleString('en-US')}-request batch dispatched by a daemon process to the mock (0 ms, 64 in flight). Before each`,
    `run an ended batch of ${backlogRows.toLocaleString('en-US')} completed requests (~1.45 KB answers) is inserted; in a compressing run the`,
    'same daemon compresses it in its maintenance loop (a pass every second) while it dispatches. Runs alternate.',
    '',
    '| run | batch rate (each) | backlog answers compressed by the batch’s end |',
    '| --- | --- | --- |',
    `| quiet | ${q.toFixed(0)} req/s (${quiet.map((r) => r.rate.toFixed(0)).join(', ')}) | – |`,
    `| compressing | ${b.toFixed(0)} req/s (${busy.map((r) => r.rate.toFixed(0)).join(', ')}) | ${busy.map((r) => `${r.compressed.toLocaleString('en-US')} (${r.answerBytes.toFixed(0)} B each)`).join('; ')} |`,
    '',
    `Rate lowered by ${((1 - b / q) * 100).toFixed(1)} %.`,
    '',
  ].join('\n');
  return { markdown };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchCompressUnderDispatch().then(
    (r) => console.log(r.markdown),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
