/**
 * Bytes stored and WAL written per request (issue 14): a batch of ROWS requests with ~1 KB request
 * bodies goes through the daemon's writes (claim, processing, completed with a ~1.5 KB answer);
 * then VACUUM (as autovacuum would; this machine's PostgreSQL runs without it) and the on-disk size
 * of requests and templates with their indexes and TOAST, divided by ROWS. WAL: the LSN difference
 * from before the file is stored to after the last completion.
 *
 * Baseline: the schema as it was before migrations 0012 and 0015 (requests at fillfactor 85, the
 * requests → request_templates foreign key), in a schema of its own, measured in the same run;
 * runs alternate baseline / current, medians reported.
 *
 *   node --import tsx bench/storage.ts   (BENCH_ROWS=20000 by default)
 */
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import type { TemplateItem } from '../src/store/files/files.js';
import { createTestDb, type TestDb } from '../test/support/db.js';

const RUNS = 3;
const CHUNK = 1000;

/** ~`bytes` of text that does not compress much (as real prompts and answers, unlike a repeated string). */
function text(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4))
    .toString('base64')
    .slice(0, bytes);
}

interface Sample {
  bytesPerRequest: number;
  walPerRequest: number;
}

async function one(rows: number, baseline: boolean): Promise<Sample> {
  const db: TestDb = await createTestDb({ max: 4 });
  const m = db.manager();
  const s = m.schema;
  try {
    if (baseline) {
      await db.pool.query(`ALTER TABLE ${s}.requests SET (fillfactor = 85)`);
      await db.pool.query(
        `ALTER TABLE ${s}.requests ADD CONSTRAINT requests_template_id_fkey
           FOREIGN KEY (template_id) REFERENCES ${s}.request_templates (id)`,
      );
    }
    const lsn = async () =>
      (await db.pool.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
    const start = await lsn();
    async function* templates(): AsyncGenerator<TemplateItem> {
      for (let i = 0; i < rows; i++) {
        const body = JSON.stringify({ model: 'gpt-bench', messages: [{ role: 'user', content: text(950) }] });
        yield {
          endpoint: 'http://127.0.0.1:9',
          method: 'POST',
          path: '/v1/chat/completions',
          body,
          model: 'gpt-bench',
          customId: `req-${i}`,
          apiKey: '',
        };
      }
    }
    const file = await m.createFileStream('bench.jsonl', null, templates());
    const batch = await m.createBatch(file);
    const answer = JSON.stringify({ id: 'chatcmpl-x', choices: [{ message: { content: text(1400) } }] });
    // The daemon's three writes per request, a chunk at a time (as its claims and flushes).
    for (let from = 1; from <= rows; from += CHUNK) {
      const range = [batch, from, from + CHUNK - 1];
      const where = `batch_id = $1 AND line_number BETWEEN $2 AND $3`;
      await db.pool.query(
        `UPDATE ${s}.requests SET state = 'claimed', daemon_id = '00000000-0000-0000-0000-000000000001',
                claimed_at = now(), lease_expires_at = now() + interval '10 minutes' WHERE ${where}`,
        range,
      );
      await db.pool.query(
        `UPDATE ${s}.requests SET state = 'processing', started_at = now(), attempt = 1 WHERE ${where}`,
        range,
      );
      await db.pool.query(
        `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200,
                response_body = $4, upstream_request_id = 'req_' || line_number, input_tokens = 250,
                output_tokens = 350, total_tokens = 600, daemon_id = NULL, lease_expires_at = NULL
          WHERE ${where}`,
        [...range, answer],
      );
    }
    const wal = await db.pool.query<{ b: string }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b`,
      [start],
    );
    await db.pool.query(`VACUUM ${s}.requests, ${s}.request_templates`);
    const size = await db.pool.query<{ b: string }>(
      `SELECT pg_total_relation_size('${s}.requests') + pg_total_relation_size('${s}.request_templates') AS b`,
    );
    return { bytesPerRequest: Number(size.rows[0]!.b) / rows, walPerRequest: Number(wal.rows[0]!.b) / rows };
  } finally {
    await db.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchStorage(
  rows = Number(process.env.BENCH_ROWS ?? 20_000),
): Promise<{ markdown: string }> {
  const base: Sample[] = [];
  const ours: Sample[] = [];
  for (let i = 0; i < RUNS; i++) {
    base.push(await one(rows, true));
    ours.push(await one(rows, false));
  }
  const kb = (x: number) => `${(x / 1024).toFixed(2)} KB`;
  const row = (name: string, xs: Sample[]) =>
    `| ${name} | ${kb(median(xs.map((x) => x.bytesPerRequest)))} | ${kb(median(xs.map((x) => x.walPerRequest)))} |`;
  const markdown = [
    '## Storage: bytes and WAL per request (bench/storage.ts)',
    '',
    `${rows.toLocaleString('en-US')} requests, ~1 KB request and ~1.4 KB answer bodies (incompressible text), through the`,
    "daemon's three writes (claimed, processing, completed) in chunks of 1,000, then VACUUM. Stored: requests and",
    `request_templates with indexes and TOAST. Medians of ${RUNS} alternating runs, each in a fresh schema.`,
    '',
    '| schema | stored per request | WAL per request |',
    '| --- | --- | --- |',
    row('baseline: fillfactor 85, requests → templates foreign key', base),
    row('current: fillfactor 100, no foreign key (migrations 0012, 0015)', ours),
    '',
  ].join('\n');
  return { markdown };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchStorage().then(
    (r) => console.log(r.markdown),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
