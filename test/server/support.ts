import OpenAI, { toFile } from 'openai';
import pg from 'pg';
import { createServer, type FusilladeServer, type ServerOptions } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { startPgBouncer } from '../support/pgbouncer.js';

/**
 * Set (to anything but "" or "0") by the `pgbouncer` vitest project (vitest.config.ts): the server's
 * pool then goes through a PgBouncer in transaction mode of the file's own, and its in-process
 * daemon takes its session (LISTEN, liveness lock) straight from PostgreSQL, as `serve
 * --database-url <pooler> --direct-database-url <postgres>` does. The test's own SQL (t.db.pool)
 * stays direct.
 */
export const THROUGH_PGBOUNCER = !['', '0', undefined].includes(process.env.FUSILLADE_TEST_PGBOUNCER);

/** A running API server on a fresh schema, with keys for two owners. */
export interface TestServer {
  db: TestDb;
  server: FusilladeServer;
  /** The server's pool: t.db.pool, or the pooler's when THROUGH_PGBOUNCER. */
  pool: pg.Pool;
  /** Quoted schema, for SQL in tests. */
  s: string;
  alice: OpenAI;
  bob: OpenAI;
  aliceKey: string;
  bobKey: string;
  client(key: string, options?: { maxRetries?: number }): OpenAI;
  close(): Promise<void>;
}

export async function startTestServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  const db = await createTestDb();
  const bouncer = THROUGH_PGBOUNCER ? await startPgBouncer() : undefined;
  const pooled = bouncer ? new pg.Pool({ connectionString: bouncer.url, max: 10 }) : undefined;
  pooled?.on('error', () => {});
  const server = await createServer({
    pool: pooled ?? db.pool,
    schema: db.schema,
    port: 0,
    daemon: false,
    routing: { upstream: 'http://127.0.0.1:9/v1' },
    ...options,
    ...(bouncer ? { daemonConfig: { ...options.daemonConfig, directConnection: TEST_DATABASE_URL } } : {}),
  });
  const s = server.manager.schema;
  const aliceKey = (await createApiKey(db.pool, s, { owner: 'alice' })).key;
  const bobKey = (await createApiKey(db.pool, s, { owner: 'bob' })).key;
  const client = (key: string, o: { maxRetries?: number } = {}) =>
    new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: o.maxRetries ?? 0 });
  return {
    db,
    server,
    pool: pooled ?? db.pool,
    s,
    alice: client(aliceKey),
    bob: client(bobKey),
    aliceKey,
    bobKey,
    client,
    async close() {
      await server.close();
      await pooled?.end();
      if (bouncer) {
        await bouncer.close();
        // Named prepared statements or session state on the pooler show up as errors in its log.
        if (/prepared statement/i.test(bouncer.output())) {
          throw new Error(`PgBouncer saw prepared statements:\n${bouncer.output()}`);
        }
      }
      await db.close();
    },
  };
}

export function chatLine(i: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    custom_id: `req-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'gpt-test', messages: [{ role: 'user', content: `hello ${i}` }] },
    ...overrides,
  };
}

export function jsonl(lines: unknown[]): string {
  return lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
}

export async function upload(client: OpenAI, content: string | Buffer, name = 'input.jsonl') {
  return client.files.create({ file: await toFile(Buffer.from(content), name), purpose: 'batch' });
}

/** Settles requests in SQL, as a daemon would, then finalizes the batch if it ended. */
export async function settle(
  t: TestServer,
  batchUuid: string,
  outcome: (line: number) => { status: number; body: string } | { errorCode: string; message: string },
): Promise<void> {
  const { rows } = await t.db.pool.query<{ id: string; line_number: number }>(
    `SELECT id, line_number FROM ${t.s}.requests WHERE batch_id = $1 AND state = 'pending' ORDER BY line_number`,
    [batchUuid],
  );
  for (const r of rows) {
    const o = outcome(r.line_number);
    if ('status' in o) {
      const ok = o.status < 300;
      await t.db.pool.query(
        `UPDATE ${t.s}.requests SET state = $2, completed_at = now(), response_status = $3, response_body = $4,
                upstream_request_id = $5, input_tokens = $6, output_tokens = $7, total_tokens = $8
          WHERE id = $1`,
        [
          r.id,
          ok ? 'completed' : 'failed',
          o.status,
          o.body,
          `up-${r.line_number}`,
          ok ? 3 : null,
          ok ? 4 : null,
          ok ? 7 : null,
        ],
      );
    } else {
      await t.db.pool.query(
        `UPDATE ${t.s}.requests SET state = 'failed', completed_at = now(), error_code = $2, error_message = $3 WHERE id = $1`,
        [r.id, o.errorCode, o.message],
      );
    }
  }
  await t.server.manager.finalizeBatch(batchUuid);
}

export function uuidOf(openaiId: string): string {
  const h = openaiId.replace(/^(file-|batch_)/, '');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The usage a batch should report: summed from the output lines' bodies, whatever their shape
 * (chat/completions prompt/completion with their details, responses input/output with theirs,
 * Anthropic input plus cache reads and writes, cached = cache reads). Written apart from
 * src/domain/usage.ts on purpose: the test checks it.
 */
export function usageOfOutput(lines: { response: { body: { usage?: Record<string, unknown> } } }[]) {
  const sum = { input: 0, cached: 0, output: 0, reasoning: 0, total: 0 };
  for (const l of lines) {
    const u = l.response.body.usage as Record<string, number & Record<string, number>> | undefined;
    if (!u) continue;
    const anthropic = 'cache_read_input_tokens' in u || 'cache_creation_input_tokens' in u;
    const input = anthropic
      ? (u.input_tokens ?? 0) + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0)
      : (u.input_tokens ?? u.prompt_tokens ?? 0);
    const cached = anthropic
      ? (u.cache_read_input_tokens ?? 0)
      : ((u.input_tokens_details ?? u.prompt_tokens_details)?.cached_tokens ?? 0);
    const output = u.output_tokens ?? u.completion_tokens ?? 0;
    sum.input += input;
    sum.cached += cached;
    sum.output += output;
    sum.reasoning += (u.output_tokens_details ?? u.completion_tokens_details)?.reasoning_tokens ?? 0;
    sum.total += anthropic ? input + output : (u.total_tokens ?? input + output);
  }
  return sum;
}

/** The same sum in the batch object's wire shape. */
export function usageObjectOf(lines: { response: { body: { usage?: Record<string, unknown> } } }[]) {
  const u = usageOfOutput(lines);
  return {
    input_tokens: u.input,
    input_tokens_details: { cached_tokens: u.cached },
    output_tokens: u.output,
    output_tokens_details: { reasoning_tokens: u.reasoning },
    total_tokens: u.total,
  };
}
