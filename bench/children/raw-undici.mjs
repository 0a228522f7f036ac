/**
 * The raw undici baseline as a process of its own (plain JavaScript, no TypeScript loader): POSTs
 * requests to the upstream with one undici Pool, `concurrency` in flight, no database.
 *
 *   node raw-undici.mjs UPSTREAM CONCURRENCY --input IN.jsonl --output OUT.jsonl
 *       the CLI's job: every Batch API line of IN sent, each answer written as an output line;
 *   node raw-undici.mjs UPSTREAM CONCURRENCY --count N
 *       N generated chat requests, each answer parsed as JSON (what the daemon does with a 2xx).
 *
 * Prints one JSON line {seconds, requests} timed from the first request to the last answer.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Pool } from 'undici';

const [upstream, concurrencyText, mode, arg, outFlag, outPath] = process.argv.slice(2);
const concurrency = Number(concurrencyText);
if (!upstream || !(concurrency > 0) || !['--input', '--count'].includes(mode ?? '')) {
  console.error('usage: raw-undici.mjs UPSTREAM CONCURRENCY (--input IN --output OUT | --count N)');
  process.exit(2);
}

const pool = new Pool(upstream, { connections: concurrency, pipelining: 1 });
const inFlight = new Set();
let requests = 0;

async function post(path, body) {
  const res = await pool.request({
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench' },
    body,
  });
  return { status: res.statusCode, text: await res.body.text() };
}

async function submit(task) {
  const p = task();
  inFlight.add(p);
  p.finally(() => inFlight.delete(p));
  if (inFlight.size >= concurrency) await Promise.race(inFlight);
}

const started = performance.now();
if (mode === '--input') {
  if (outFlag !== '--output' || !outPath) throw new Error('--input needs --output');
  const out = createWriteStream(outPath);
  const lines = createInterface({ input: createReadStream(arg), crlfDelay: Number.POSITIVE_INFINITY });
  for await (const text of lines) {
    if (!text) continue;
    const line = JSON.parse(text);
    requests++;
    await submit(async () => {
      const { status, text: body } = await post(line.url, JSON.stringify(line.body));
      out.write(
        `{"custom_id":${JSON.stringify(line.custom_id)},"response":{"status_code":${status},"body":${body}}}\n`,
      );
    });
  }
  await Promise.all(inFlight);
  out.end();
  await once(out, 'finish');
} else {
  const n = Number(arg);
  for (let i = 0; i < n; i++) {
    requests++;
    await submit(async () => {
      const { text } = await post(
        '/v1/chat/completions',
        JSON.stringify({ model: 'raw', messages: [{ role: 'user', content: `hello ${i}` }] }),
      );
      JSON.parse(text);
    });
  }
  await Promise.all(inFlight);
}
const seconds = (performance.now() - started) / 1000;
await pool.close();
process.stdout.write(`${JSON.stringify({ seconds, requests })}\n`);
