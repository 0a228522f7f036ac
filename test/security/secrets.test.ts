import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';
import { Recorder } from './support.js';

/**
 * Upstream API keys never leave the process that uses them: not in any API answer, output or error
 * file, stored error message, database row or log line of the server or the daemon. Client keys
 * are stored hashed. Each secret is distinctive, so a scan for it cannot miss a leak.
 */

const SECRET_DEFAULT = 'sk-UPSTREAM-default-9f8e7d6c5b4a39281706';
const SECRET_REFUSED = 'sk-UPSTREAM-refused-1a2b3c4d5e6f70819203';
const SECRET_ENV = 'sk-UPSTREAM-fromenv-0f1e2d3c4b5a69788796';
const SECRETS = [SECRET_DEFAULT, SECRET_REFUSED, SECRET_ENV];

let mock: MockUpstream;
let t: TestServer;
let http: Recorder;
const logs: unknown[] = [];
let closedPort = 0;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

beforeAll(async () => {
  closedPort = await freePort();
  process.env.FUSILLADE_TEST_SECRET_ENV = SECRET_ENV;
  mock = await startMockUpstream();
  mock.setBehaviour((req) => {
    const auth = String(req.headers.authorization ?? '');
    if (req.body.includes('"unauthorised"')) {
      // As OpenAI does: the key in the message, masked.
      return {
        kind: 'status',
        status: 401,
        body: {
          error: { message: `Incorrect API key provided: ${auth.slice(7, 14)}****${auth.slice(-4)}.` },
        },
      };
    }
    if (req.body.includes('"flaky"')) return { kind: 'status', status: 503 };
    if (req.body.includes('"reset"')) return { kind: 'reset' };
    return { kind: 'ok' };
  });
  t = await startTestServer({
    daemon: true,
    routing: {
      upstream: `${mock.url}/v1`,
      upstreamApiKey: SECRET_DEFAULT,
      models: {
        'gpt-refused': { upstream: `http://127.0.0.1:${closedPort}/v1`, apiKey: SECRET_REFUSED },
        'gpt-env': { apiKeyEnv: 'FUSILLADE_TEST_SECRET_ENV' },
      },
    },
    daemonConfig: {
      pollIntervalMs: 100,
      maxRetries: 1,
      backoffMs: 10,
      maxBackoffMs: 20,
      logger: (entry) => void logs.push(entry),
    },
    logger: (entry) => void logs.push(entry),
  });
  http = new Recorder(t);
});

afterAll(async () => {
  delete process.env.FUSILLADE_TEST_SECRET_ENV;
  await t?.close();
  await mock?.close();
});

/** Every row of every table of the schema, as text. */
async function databaseText(): Promise<string> {
  const { rows: tables } = await t.db.pool.query(
    `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'`,
    [t.db.schema],
  );
  expect(tables.length).toBeGreaterThan(5);
  const parts: string[] = [];
  for (const { table_name } of tables) {
    const { rows } = await t.db.pool.query(`SELECT x::text AS row FROM ${t.s}."${table_name}" x`);
    for (const r of rows) parts.push(r.row);
  }
  return parts.join('\n');
}

function expectNoSecret(where: string, text: string): void {
  for (const secret of SECRETS) {
    // The distinctive tail, so a key split by a prefix-only mask still counts as a leak.
    expect(text.includes(secret.slice(12)), `${where} contains an upstream key`).toBe(false);
  }
}

describe('secrets', () => {
  it('never shows an upstream key in answers, files, stored errors, rows or logs', async () => {
    const line = (i: number, model: string, content = `hello ${i}`) =>
      chatLine(i, { body: { model, messages: [{ role: 'user', content }] } });
    const file = await upload(
      t.alice,
      jsonl([
        line(1, 'gpt-test'),
        line(2, 'gpt-test', 'unauthorised'),
        line(3, 'gpt-test', 'flaky'),
        line(4, 'gpt-test', 'reset'),
        line(5, 'gpt-refused'),
        line(6, 'gpt-env'),
        line(7, 'gpt-env', 'unauthorised'),
      ]),
    );
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await waitFor(async () => {
      const b = await http.call('GET', `/v1/batches/${batch.id}`, { key: t.aliceKey });
      const body = b.json as { status: string; output_file_id: string; error_file_id: string };
      return body.status === 'completed' ? body : null;
    }, 30_000);

    // The keys were really in use: the mock saw them.
    const auths = new Set(mock.requests.map((r) => r.headers.authorization));
    expect(auths).toContain(`Bearer ${SECRET_DEFAULT}`);
    expect(auths).toContain(`Bearer ${SECRET_ENV}`);

    const output = await http.call('GET', `/v1/files/${done.output_file_id}/content`, { key: t.aliceKey });
    const errors = await http.call('GET', `/v1/files/${done.error_file_id}/content`, { key: t.aliceKey });
    expect(output.text.trim().split('\n')).toHaveLength(2);
    const errorLines = errors.text.trim().split('\n');
    expect(errorLines).toHaveLength(5);
    // The stored errors still tell the user what happened.
    expect(errors.text).toContain('Incorrect API key provided');
    expect(errors.text).toMatch(/ECONNREFUSED|connection/);

    const list = await http.call('GET', `/api/dashboard/batches/${batch.id}/requests?limit=100`, {
      key: t.aliceKey,
    });
    for (const r of (list.json as { data: { id: string }[] }).data) {
      const detail = await http.call('GET', `/api/dashboard/batches/${batch.id}/requests/${r.id}`, {
        key: t.aliceKey,
      });
      expect(detail.status).toBe(200);
    }
    for (const path of [
      `/v1/batches/${batch.id}`,
      '/v1/batches',
      '/v1/files',
      `/api/dashboard/batches/${batch.id}/progress`,
      '/api/dashboard/batches',
      '/api/dashboard/operations',
      '/metrics',
      '/healthz',
      '/openapi.json',
    ]) {
      expect((await http.call('GET', path, { key: t.aliceKey })).status).toBe(200);
    }

    expectNoSecret('API answers', http.seen.join('\n'));
    expectNoSecret('the database', await databaseText());
    const logText = JSON.stringify(logs);
    expect(logs.length).toBeGreaterThan(5);
    expectNoSecret('the logs', logText);
    // Client keys do not reach the logs either.
    expect(logText).not.toContain(t.aliceKey.slice(4));
  });

  it('stores client keys only as SHA-256 hashes', async () => {
    const { rows } = await t.db.pool.query(`SELECT x::text AS row, key_hash FROM ${t.s}.api_keys x`);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    const dump = rows.map((r) => r.row).join('\n');
    for (const key of [t.aliceKey, t.bobKey]) {
      // Nothing past the short display prefix is stored.
      expect(dump).not.toContain(key.slice(12));
      expect(rows.map((r) => r.key_hash)).toContain(createHash('sha256').update(key).digest('hex'));
    }
  });
});
