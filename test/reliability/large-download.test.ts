import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, startTestServer, type TestServer, upload, uuidOf } from '../server/support.js';

/**
 * Finding 1 of issue 17: an output file with large lines froze the server. The framer grew a cut
 * row with Buffer.concat per chunk (quadratic in the row's size, on the event loop the in-process
 * daemon shares): one 50 MB line took 21 s to download and /healthz took 5.6–11 s meanwhile. Here a
 * 30 MB line (and a 30 MB line in the error file) download while /healthz is asked again and again.
 */

const BIG = 30 * 1024 * 1024;
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

/** A JSON body of about `bytes` bytes with escapes (quotes, backslashes, newlines) all through it. */
function bigBody(bytes: number, tag: string): string {
  const unit = `${'x'.repeat(1000)}\\"\\\\\\n`;
  return `{"tag":"${tag}","s":"${unit.repeat(Math.ceil(bytes / unit.length))}"}`;
}

/** GETs a path, streaming: the body's size, SHA-256 and last 200 bytes (nothing buffered whole). */
function download(path: string): Promise<{ status: number; bytes: number; sha: string; lines: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${t.server.url}${path}`, { headers: { authorization: `Bearer ${t.aliceKey}` } });
    req.on('error', reject);
    req.on('response', (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let lines = 0;
      res.on('data', (d: Buffer) => {
        hash.update(d);
        bytes += d.length;
        for (let at = d.indexOf(10); at !== -1; at = d.indexOf(10, at + 1)) lines++;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sha: hash.digest('hex'), lines }));
      res.on('error', reject);
    });
  });
}

/** Asks /healthz one after another until `until` settles; returns each answer's latency (ms). */
async function pollHealth(until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => {
    done = true;
  });
  const latencies: number[] = [];
  while (!done) {
    const started = performance.now();
    const res = await fetch(`${t.server.url}/healthz`);
    await res.text();
    expect(res.status).toBe(200);
    latencies.push(performance.now() - started);
    await new Promise((r) => setTimeout(r, 10));
  }
  return latencies;
}

describe('downloading files with 30 MB lines', () => {
  it('streams them in bounded pieces while /healthz keeps answering', async () => {
    const file = await upload(t.alice, jsonl([chatLine(1), chatLine(2), chatLine(3)]));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const okBody = bigBody(BIG, 'ok');
    const failBody = bigBody(BIG, 'fail');
    const { rows } = await t.db.pool.query<{ id: string; line_number: number }>(
      `SELECT id, line_number FROM ${t.s}.requests WHERE batch_id = $1 ORDER BY line_number`,
      [uuidOf(batch.id)],
    );
    const settle = (id: string, state: string, status: number, body: string) =>
      t.db.pool.query(
        `UPDATE ${t.s}.requests SET state = $2, completed_at = now(), response_status = $3, response_body = $4
          WHERE id = $1`,
        [id, state, status, body],
      );
    await settle(rows[0]!.id, 'completed', 200, okBody);
    await settle(rows[1]!.id, 'completed', 200, '{"small":true}');
    await settle(rows[2]!.id, 'failed', 400, failBody);
    await t.server.manager.finalizeBatch(uuidOf(batch.id));
    const ended = await t.alice.batches.retrieve(batch.id);
    expect(ended.status).toBe('completed');

    for (const [fileId, body, lines] of [
      [ended.output_file_id!, okBody, 2],
      [ended.error_file_id!, failBody, 1],
    ] as const) {
      const started = performance.now();
      const got = download(`/v1/files/${fileId}/content`);
      const latencies = await pollHealth(got);
      const result = await got;
      const seconds = (performance.now() - started) / 1000;
      expect(result.status).toBe(200);
      expect(result.lines).toBe(lines);
      // Every byte of the big body is there: the line is the body plus its short frame.
      expect(result.bytes).toBeGreaterThan(body.length);
      expect(result.bytes).toBeLessThan(body.length + 1000);
      expect(latencies.length).toBeGreaterThan(0);
      const sorted = [...latencies].sort((a, b) => a - b);
      const worst = sorted.at(-1)!;
      const p90 = sorted[Math.floor(sorted.length * 0.9)] ?? worst;
      console.log(
        `${lines === 2 ? 'output' : 'error'} file: ${(result.bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s; /healthz ${latencies.length} answers, p90 ${p90.toFixed(0)} ms, worst ${worst.toFixed(0)} ms`,
      );
      // Measured against the download itself, not the clock, so a slower or busier machine scales
      // both sides: nine in ten /healthz answers take under a quarter of the download's time and none
      // half of it (the quadratic framer held the event loop for a quarter to half of it at every
      // answer; a quiet machine answers in ~130 ms at p90 during a 6.7 s download, RELIABILITY.md;
      // with one core kept busy, 11.5 % was seen).
      expect(p90).toBeLessThan(seconds * 1000 * 0.25);
      expect(worst).toBeLessThan(seconds * 1000 * 0.5);
    }
    // The big line is the stored body, byte for byte, inside a well-formed output line.
    const content = await t.alice.files.content(ended.output_file_id!);
    const text = await content.text();
    const big = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { response: { body: { tag?: string } } })
      .find((l) => l.response.body.tag === 'ok');
    expect(JSON.stringify(big?.response.body)).toBe(JSON.stringify(JSON.parse(okBody)));
  }, 120_000);
});
