/**
 * Bench: the API server's upload of a 50,000-line (~200 MB) batch input file and the download of
 * its 50,000 results, each against raw COPY in / out of the same PostgreSQL in the same run.
 * The server runs in a child process so its resident memory is measured alone.
 * Standalone: `node --import tsx bench/server-transfer.ts [lines] [lineBytes]`.
 * BENCH_KEEP=1 keeps the schema for inspection; BENCH_PROF=1 writes the server's CPU profile to /tmp/prof;
 * BENCH_DEBUG=1 prints every download round.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { request } from 'undici';
import { migrate } from '../src/db/migrate.js';
import { createApiKey } from '../src/store/api-keys.js';

export interface ServerTransferOptions {
  lines?: number;
  /** Approximate bytes per input line (and per response body). */
  lineBytes?: number;
  databaseUrl?: string;
}

export interface ServerTransferResult {
  markdown: string;
  upload: { seconds: number; baselineSeconds: number; rssGrowthMB: number };
  download: { seconds: number; baselineSeconds: number; rssGrowthMB: number };
}

const MB = 1024 * 1024;
const ROUNDS = 3;
const CSV_RAW = `WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')`;

async function writeInput(path: string, lines: number, lineBytes: number): Promise<number> {
  const out = createWriteStream(path);
  const pad = 'lorem ipsum dolor sit amet '
    .repeat(Math.ceil(lineBytes / 27))
    .slice(0, Math.max(0, lineBytes - 160));
  for (let i = 1; i <= lines; i++) {
    const line = `{"custom_id":"req-${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-bench","messages":[{"role":"user","content":"${i} ${pad}"}]}}\n`;
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return (await stat(path)).size;
}

function startChild(databaseUrl: string, schema: string) {
  const child = fork(fileURLToPath(new URL('./server-child.ts', import.meta.url)), [], {
    execArgv: [
      '--import',
      'tsx',
      '--expose-gc',
      ...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []),
    ],
    env: { ...process.env, DATABASE_URL: databaseUrl, BENCH_SCHEMA: schema },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ask = <T>(type: string): Promise<T> =>
    new Promise((resolve) => {
      const onMessage = (m: { type: string }) => {
        if (m.type === type) {
          child.off('message', onMessage);
          resolve(m as T);
        }
      };
      child.on('message', onMessage);
      if (type !== 'ready') child.send({ type });
    });
  return { child, ask };
}

/** A multipart/form-data body streamed from disk: never held in memory. */
function multipart(path: string, size: number) {
  const boundary = `----fusillade${randomBytes(8).toString('hex')}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.jsonl"\r\n` +
      'Content-Type: application/jsonl\r\n\r\n',
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* body() {
    yield head;
    for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) yield chunk as Buffer;
    yield tail;
  }
  return {
    headers: {
      'content-type': `multipart/form-data; boundary=${boundary}`,
      'content-length': String(head.length + size + tail.length),
    },
    body: Readable.from(body()),
  };
}

function counter() {
  let bytes = 0;
  let lines = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
      cb();
    },
  });
  return { sink, totals: () => ({ bytes, lines }) };
}

const secondsSince = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;

export async function benchServerTransfer(
  options: ServerTransferOptions = {},
): Promise<ServerTransferResult> {
  const lines = options.lines ?? 50_000;
  const lineBytes = options.lineBytes ?? 4096;
  const databaseUrl =
    options.databaseUrl ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schemaName = `bench_server_${randomBytes(4).toString('hex')}`;
  const s = `"${schemaName}"`;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const path = join(tmpdir(), `${schemaName}.jsonl`);
  const { child, ask } = startChild(databaseUrl, schemaName);
  try {
    await migrate(pool, { schema: schemaName });
    const size = await writeInput(path, lines, lineBytes);
    const { url } = await ask<{ url: string }>('ready');
    const key = (await createApiKey(pool, s, { owner: 'bench' })).key;
    const auth = { authorization: `Bearer ${key}` };

    // Each side twice, interleaved, best time kept: the shared machine's load varies by the second.
    // Baseline in: the same bytes through COPY into a one-column table.
    await pool.query(`CREATE TABLE ${s}.bench_raw (line text)`);
    let copyIn = Number.POSITIVE_INFINITY;
    let uploadSeconds = Number.POSITIVE_INFINITY;
    let upRss = 0;
    let file = { id: '', bytes: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      const client = await pool.connect();
      let t = process.hrtime.bigint();
      await pipeline(
        createReadStream(path),
        client.query(copyFrom(`COPY ${s}.bench_raw (line) FROM STDIN ${CSV_RAW}`)),
      );
      copyIn = Math.min(copyIn, secondsSince(t));
      client.release();

      await ask('reset');
      t = process.hrtime.bigint();
      const form = multipart(path, size);
      const up = await request(`${url}/v1/files`, {
        method: 'POST',
        headers: { ...auth, ...form.headers },
        body: form.body,
      });
      file = (await up.body.json()) as { id: string; bytes: number };
      uploadSeconds = Math.min(uploadSeconds, secondsSince(t));
      if (up.statusCode !== 200) throw new Error(`upload failed: ${up.statusCode} ${JSON.stringify(file)}`);
      const mem = await ask<{ baseline: number; peak: number }>('peak');
      upRss = Math.max(upRss, mem.peak - mem.baseline);
    }

    // Results: every request completed with a body about as large as its input line.
    const created = await request(`${url}/v1/batches`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      }),
    });
    const batch = (await created.body.json()) as { id: string };
    if (created.statusCode !== 200) throw new Error(`batch creation failed: ${JSON.stringify(batch)}`);
    const batchUuid = batch.id.slice(6).replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5');
    await pool.query(
      `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200,
              upstream_request_id = 'up-' || line_number, input_tokens = 10, output_tokens = 20, total_tokens = 30,
              response_body = '{"id":"chatcmpl-' || line_number || '","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
                || repeat('x', $2) || '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}'
        WHERE batch_id = $1`,
      [batchUuid, Math.max(0, lineBytes - 200)],
    );
    await pool.query(`SELECT ${s}.jsonl_value('{}')`); // warm the function
    await pool.query(`VACUUM ANALYZE ${s}.requests`);
    const got = await request(`${url}/v1/batches/${batch.id}`, { headers: auth });
    const done = (await got.body.json()) as { output_file_id: string | null; status: string };
    // The daemon is off: end the batch as it would.
    if (!done.output_file_id) {
      const { finalizeBatchSql } = await import('../src/db/sql/batches/finalize-batch.js');
      await pool.query(finalizeBatchSql(s), [batchUuid]);
    }
    const after = (await (await request(`${url}/v1/batches/${batch.id}`, { headers: auth })).body.json()) as {
      output_file_id: string;
    };

    // Baseline out: the bodies through COPY TO.
    let copyOut = Number.POSITIVE_INFINITY;
    let downloadSeconds = Number.POSITIVE_INFINITY;
    let downRss = 0;
    let rawOut = counter();
    let apiOut = counter();
    for (let round = 0; round < ROUNDS; round++) {
      rawOut = counter();
      const outClient = await pool.connect();
      let t = process.hrtime.bigint();
      await pipeline(
        outClient.query(
          copyTo(
            `COPY (SELECT response_body FROM ${s}.requests WHERE batch_id = '${batchUuid}') TO STDOUT ${CSV_RAW}`,
          ),
        ),
        rawOut.sink,
      );
      copyOut = Math.min(copyOut, secondsSince(t));
      outClient.release();

      await ask('reset');
      apiOut = counter();
      t = process.hrtime.bigint();
      const down = await request(`${url}/v1/files/${after.output_file_id}/content`, { headers: auth });
      await pipeline(down.body, apiOut.sink);
      if (process.env.BENCH_DEBUG) console.error('round', round, 'raw', copyOut, 'api', secondsSince(t));
      downloadSeconds = Math.min(downloadSeconds, secondsSince(t));
      const mem = await ask<{ baseline: number; peak: number }>('peak');
      downRss = Math.max(downRss, mem.peak - mem.baseline);
    }
    if (apiOut.totals().lines !== lines) throw new Error(`download had ${apiOut.totals().lines} lines`);

    const upMB = size / MB;
    const downMB = apiOut.totals().bytes / MB;
    const rawDownMB = rawOut.totals().bytes / MB;
    const row = (name: string, secs: number, mb: number, base: number, baseMB: number, rss: number) => {
      const ratio = mb / secs / (baseMB / base);
      const met = ratio >= 0.5 && rss < 100 * MB ? 'met' : 'missed';
      return `| ${name} | ${secs.toFixed(2)} s | ${(mb / secs).toFixed(1)} MB/s, ${Math.round(lines / secs).toLocaleString('en-US')} lines/s | ${base.toFixed(2)} s (${(baseMB / base).toFixed(1)} MB/s) | ${ratio.toFixed(2)} | ${(rss / MB).toFixed(1)} MB | ${met} |`;
    };
    const markdown = [
      `### Server: upload and download (${lines.toLocaleString('en-US')} lines)`,
      '',
      `Input file ${upMB.toFixed(1)} MB; output file ${downMB.toFixed(1)} MB. Server in its own process (peak RSS sampled every 10 ms; growth over its RSS just before the transfer).`,
      'Baselines in the same run: raw `COPY FROM STDIN` of the same file into a one-column table; raw `COPY TO STDOUT` of the response bodies. Each side runs three times, interleaved; the best time counts. The API path has one more process relaying the bytes (PostgreSQL → server → client) than the baseline (PostgreSQL → client).',
      '',
      'Goal: at least half the baseline rate, server RSS growth under 100 MB.',
      '',
      '| transfer | time | rate | raw COPY baseline | rate / baseline | server RSS growth | goal |',
      '|---|---|---|---|---|---|---|',
      row(
        'upload (POST /v1/files, validated, COPY into request_templates)',
        uploadSeconds,
        upMB,
        copyIn,
        upMB,
        upRss,
      ),
      row('download (GET /v1/files/{output}/content)', downloadSeconds, downMB, copyOut, rawDownMB, downRss),
      '',
    ].join('\n');
    return {
      markdown,
      upload: { seconds: uploadSeconds, baselineSeconds: copyIn, rssGrowthMB: upRss / MB },
      download: { seconds: downloadSeconds, baselineSeconds: copyOut, rssGrowthMB: downRss / MB },
    };
  } finally {
    child.send({ type: 'close' });
    await once(child, 'exit').catch(() => {});
    if (!process.env.BENCH_KEEP) await pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => {});
    await pool.end();
    await unlink(path).catch(() => {});
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [lines, lineBytes] = process.argv.slice(2).map(Number);
  const result = await benchServerTransfer({
    ...(lines ? { lines } : {}),
    ...(lineBytes ? { lineBytes } : {}),
  });
  console.log(result.markdown);
}
