import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../src/store/api-keys.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { Recorder } from './support.js';

/**
 * SQL injection and other hostile strings in every string parameter: path ids, query parameters,
 * JSON fields, multipart fields, JSONL fields, headers and key owners. Each is harmless: a 4xx or
 * the string stored and returned exactly as sent; never a 500, never a changed or dropped table.
 */

const PAYLOADS = [
  "' OR '1'='1",
  "'; DROP TABLE requests; --",
  '"; DROP SCHEMA public CASCADE; --',
  '1; SELECT pg_sleep(5); --',
  "') OR 1=1 --",
  "batch_' OR 1=1 --",
  "file-' UNION SELECT key_hash, owner FROM api_keys --",
  "00000000-0000-0000-0000-000000000000' OR 'a'='a",
  '%',
  '_',
  "%' --",
  '\\',
  '$1',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal placeholder is the payload
  '${schema}',
  '\u0000',
  'é🚀\u202e',
  '<script>alert(1)</script>',
  '../../etc/passwd',
  'null',
  '-1',
  '1e309',
  ' ',
];

let t: TestServer;
let http: Recorder;
let batchId = '';
let fileId = '';

beforeAll(async () => {
  t = await startTestServer();
  http = new Recorder(t);
  const file = await upload(t.alice, jsonl([chatLine(1), chatLine(2)]));
  fileId = file.id;
  batchId = (
    await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    })
  ).id;
});
afterAll(() => t?.close());

/**
 * Calls of statements that name pg_sleep, from pg_stat_statements (null where it is not installed):
 * only a payload that reached PostgreSQL as SQL, not as a parameter, makes one (no other test or
 * code calls pg_sleep).
 */
async function sleepCalls(): Promise<number | null> {
  const { rows } = await t.db.pool.query(`SELECT to_regclass('pg_stat_statements') IS NOT NULL AS present`);
  if (!rows[0].present) return null;
  const calls = await t.db.pool.query(
    `SELECT coalesce(sum(calls), 0)::int AS n FROM pg_stat_statements WHERE query ILIKE '%pg_sleep%'`,
  );
  return calls.rows[0].n;
}

async function snapshot(): Promise<string> {
  const { rows } = await t.db.pool.query(
    `SELECT (SELECT count(*) FROM ${t.s}.files) AS files, (SELECT count(*) FROM ${t.s}.request_templates) AS templates,
            (SELECT count(*) FROM ${t.s}.batches) AS batches, (SELECT count(*) FROM ${t.s}.requests) AS requests,
            (SELECT count(*) FROM ${t.s}.api_keys) AS keys,
            (SELECT count(*) FROM ${t.s}.batches WHERE cancelling_at IS NOT NULL) AS cancelled,
            (SELECT count(*) FROM ${t.s}.files WHERE deleted_at IS NOT NULL) AS deleted`,
  );
  return JSON.stringify(rows[0]);
}

const enc = encodeURIComponent;

describe('hostile strings', () => {
  it('in path ids and query parameters: 4xx or an empty answer, never a 500, nothing changed', async () => {
    const before = await snapshot();
    const sleptBefore = await sleepCalls();
    const failures: string[] = [];
    for (const p of PAYLOADS) {
      const e = enc(p);
      const calls: [string, string][] = [
        ['GET', `/v1/files/${e}`],
        ['GET', `/v1/files/file-${e}`],
        ['GET', `/v1/files/${e}/content`],
        ['DELETE', `/v1/files/${e}`],
        ['GET', `/v1/batches/${e}`],
        ['GET', `/v1/batches/batch_${e}`],
        ['POST', `/v1/batches/${e}/cancel`],
        ['GET', `/v1/files?purpose=${e}`],
        ['GET', `/v1/files?order=${e}`],
        ['GET', `/v1/files?limit=${e}`],
        ['GET', `/v1/files?after=${e}`],
        ['GET', `/v1/batches?after=${e}&limit=${e}`],
        ['GET', `/v1/batches?after=${e}`],
        ['GET', `/api/dashboard/batches?q=${e}`],
        ['GET', `/api/dashboard/batches?status=${e}`],
        ['GET', `/api/dashboard/batches?after=${e}`],
        ['GET', `/api/dashboard/batches?limit=${e}`],
        ['GET', `/api/dashboard/batches/${e}/progress`],
        ['GET', `/api/dashboard/batches/${e}/requests`],
        ['POST', `/api/dashboard/batches/${e}/retry`],
        ['GET', `/api/dashboard/batches/${batchId}/requests?q=${e}`],
        ['GET', `/api/dashboard/batches/${batchId}/requests?state=${e}`],
        ['GET', `/api/dashboard/batches/${batchId}/requests?after_line=${e}`],
        ['GET', `/api/dashboard/batches/${batchId}/requests/${e}`],
      ];
      for (const [method, path] of calls) {
        const res = await http.call(method, path, { key: t.aliceKey });
        if (res.status >= 500 || res.headers.get('content-type')?.startsWith('application/json') !== true) {
          failures.push(`${method} ${path} → ${res.status} ${res.text.slice(0, 120)}`);
        }
      }
    }
    expect(failures).toEqual([]);
    // pg_sleep never ran: counted by PostgreSQL, not timed (~530 calls in under 60 s was a speed
    // check on a loaded machine).
    expect(await sleepCalls()).toBe(sleptBefore);
    expect(await snapshot()).toBe(before);
    expect((await t.alice.batches.retrieve(batchId)).request_counts?.total).toBe(2);
  }, 120_000);

  it('in JSON fields, metadata and headers: refused, or stored and returned exactly', async () => {
    const base = { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' };
    const failures: string[] = [];
    for (const p of PAYLOADS) {
      for (const body of [
        { ...base, input_file_id: p },
        { ...base, endpoint: p },
        { ...base, completion_window: p },
        { ...base, metadata: p },
      ]) {
        const res = await http.call('POST', '/v1/batches', { key: t.aliceKey, body });
        if (res.status < 400 || res.status >= 500) failures.push(`${JSON.stringify(body)} → ${res.status}`);
      }
    }
    expect(failures).toEqual([]);
    // Metadata keys and values and idempotency keys are stored and come back as sent (NUL aside:
    // PostgreSQL text cannot hold it, so it must be a 400).
    for (const [i, p] of PAYLOADS.entries()) {
      const metadata = { [`k${i}${p}`.slice(0, 64)]: p };
      const res = await http.call('POST', '/v1/batches', {
        key: t.aliceKey,
        body: { ...base, metadata },
        headers: { 'idempotency-key': `idem-${i}-${p.replace(/[^\x20-\x7e]/g, '?')}` },
      });
      if (p.includes('\u0000')) {
        expect(res.status, JSON.stringify(p)).toBe(400);
        continue;
      }
      expect(res.status, `${JSON.stringify(p)}: ${res.text}`).toBe(200);
      const created = res.json as { id: string; metadata: unknown };
      expect(created.metadata).toEqual(metadata);
      const again = await http.call('GET', `/v1/batches/${created.id}`, { key: t.aliceKey });
      expect((again.json as { metadata: unknown }).metadata).toEqual(metadata);
    }
  });

  it('in JSONL fields and file names: stored byte for byte or refused with the line', async () => {
    const before = await snapshot();
    const lines = PAYLOADS.filter((p) => !p.includes('\u0000')).map((p, i) =>
      chatLine(i, {
        custom_id: `${i}:${p}`,
        body: { model: `m-${p}`, messages: [{ role: 'user', content: p }] },
      }),
    );
    const file = await upload(t.alice, jsonl(lines), "x'; DROP TABLE files; --.jsonl");
    expect(file.filename).toBe("x'; DROP TABLE files; --.jsonl");
    const { rows } = await t.db.pool.query(
      `SELECT custom_id, model FROM ${t.s}.request_templates
        WHERE file_id = (SELECT id FROM ${t.s}.files WHERE name = $1) ORDER BY line_number`,
      [file.filename],
    );
    expect(rows.map((r) => r.custom_id)).toEqual(lines.map((l) => l.custom_id));
    expect(rows.map((r) => r.model)).toEqual(lines.map((l) => (l.body as { model: string }).model));
    const content = await (await t.alice.files.content(file.id)).text();
    expect(content).toBe(jsonl(lines));
    const after = JSON.parse(await snapshot());
    expect(after.files - JSON.parse(before).files).toBe(1);
  });

  it('in key owners: stored as data, shown back exactly', async () => {
    for (const p of PAYLOADS.filter((x) => x.trim() !== '' && !x.includes('\u0000'))) {
      const key = await createApiKey(t.db.pool, t.s, { owner: p });
      const me = await http.call('GET', '/api/dashboard/me', { key: key.key });
      expect(me.json).toEqual({ owner: p });
      // A hostile owner name sees nothing of alice's.
      const list = await http.call('GET', '/v1/batches', { key: key.key });
      expect((list.json as { data: unknown[] }).data).toEqual([]);
    }
  });
});

describe('size limits', () => {
  it('refuses JSON bodies over the limit, declared or streamed, with 413', async () => {
    const big = JSON.stringify({ input_file_id: fileId, pad: 'x'.repeat(2 * 1024 * 1024) });
    const declared = await http.call('POST', '/v1/batches', { key: t.aliceKey, body: big });
    expect(declared.status).toBe(413);
    // Without a content-length: chunked from a stream.
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 40; i++) c.enqueue(new TextEncoder().encode('x'.repeat(64 * 1024)));
        c.close();
      },
    });
    const res = await fetch(`${t.server.url}/v1/batches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.aliceKey}`, 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect((await http.call('GET', '/v1/batches', { key: t.aliceKey })).status).toBe(200);
  });
});
