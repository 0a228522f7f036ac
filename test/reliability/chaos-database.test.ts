import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { fileId } from '../../src/server/ids.js';
import { createServer, type FusilladeServer } from '../../src/server/server.js';
import { createApiKey } from '../../src/store/api-keys.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb, template } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';
import { DaemonFleet, PgProxy, taggedUrl, uniqueTag } from './support/daemons.js';

/**
 * The database goes away mid-run. Two `fusillade daemon` processes and the API server reach
 * PostgreSQL through a loopback proxy. First every one of their sessions is killed with
 * pg_terminate_backend; then the network hangs (connections accepted, never answered); then the
 * database refuses connections. API calls during the outage answer 503 quickly; afterwards the
 * server and the daemons recover by themselves and the batch completes, each request once.
 */

const REQUESTS = 1500;
const DB_TIMEOUT_MS = 1000;

let db: TestDb;
let mock: MockUpstream;
let proxy: PgProxy;
let serverPool: pg.Pool;
let server: FusilladeServer;
let fleet: DaemonFleet;
let client: OpenAI;
let key = '';
const serverTag = uniqueTag('outage_server');
const daemonTag = uniqueTag('outage_daemon');

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream({ recordBodies: false });
  mock.setBehaviour(() => ({ kind: 'delay', ms: 20 + Math.floor(Math.random() * 20) }));
  proxy = new PgProxy();
  await proxy.up();
  serverPool = new pg.Pool({ connectionString: taggedUrl(TEST_DATABASE_URL, serverTag, proxy.port), max: 6 });
  serverPool.on('error', () => {});
  server = await createServer({
    pool: serverPool,
    schema: db.schema,
    port: 0,
    daemon: false,
    dbTimeoutMs: DB_TIMEOUT_MS,
    routing: { upstream: mock.url, upstreamApiKey: 'sk-outage' },
  });
  key = (await createApiKey(db.pool, server.manager.schema, { owner: 'alice' })).key;
  client = new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 10_000 });
  fleet = new DaemonFleet({
    databaseUrl: taggedUrl(TEST_DATABASE_URL, daemonTag, proxy.port),
    schema: db.schema,
    upstream: mock.url,
    upstreamApiKey: 'sk-outage',
    modelLimits: { 'gpt-test': 16 },
    daemon: {
      heartbeatIntervalMs: 250,
      deadDaemonAfterMs: 10_000,
      pollIntervalMs: 250,
      requestTimeoutMs: 5000,
      dbTimeoutMs: 2000,
      shutdownGraceMs: 1000,
    },
  });
});

afterAll(async () => {
  await proxy?.up().catch(() => {});
  await fleet?.stopAll();
  await server?.close();
  await serverPool?.end().catch(() => {});
  await proxy?.down();
  await mock?.close();
  await db?.close();
});

async function completed(batchUuid: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM ${db.schema}.requests WHERE batch_id = $1 AND state = 'completed'`,
    [batchUuid],
  );
  return rows[0].n;
}

/**
 * Times one API call; during an outage it must be a 503 from the server's deadline, never a hang. The
 * abort is the hang guard (60 × the deadline), not a speed check: a server without its deadline
 * never answers while the network hangs, and the call fails here.
 */
async function timed(path: string): Promise<{ status: number; ms: number; code?: string }> {
  const started = Date.now();
  const res = await fetch(`${server.url}${path}`, {
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(60 * DB_TIMEOUT_MS),
  });
  const body = (await res.json()) as { error?: { code?: string } };
  return { status: res.status, ms: Date.now() - started, code: body.error?.code };
}

async function untilOk(path: string): Promise<number> {
  const started = Date.now();
  await waitFor(async () => (await timed(path)).status === 200, 30_000, 100);
  return Date.now() - started;
}

describe('chaos: the database goes away', () => {
  it('recovers from terminated sessions, a hung network and refused connections', async () => {
    await Promise.all([fleet.start(), fleet.start()]);
    // The input is stored through the server's manager, not uploaded: a loaded machine could see
    // the server's 1 s deadline pass on storing 1,500 rows at every one of the client's retries. The
    // set-up's API calls retry their 503s, as the openai client does by default.
    const setup = client.withOptions({ maxRetries: 5 });
    const file = await server.manager.createFile(
      'input.jsonl',
      null,
      Array.from({ length: REQUESTS }, (_, i) => template(i, { apiKey: '' })),
      { owner: 'alice' },
    );
    const batch = await setup.batches.create({
      input_file_id: fileId(file),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const batchUuid = batch.id.slice('batch_'.length).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
    const batchPath = `/v1/batches/${batch.id}`;
    await waitFor(async () => (await completed(batchUuid)) >= REQUESTS * 0.15, 60_000, 100);

    // 1. Every session of the server and the daemons killed at once.
    const { rows: killed } = await db.pool.query(
      `SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name IN ($1, $2)) t`,
      [serverTag, daemonTag],
    );
    expect(killed[0].n).toBeGreaterThanOrEqual(3); // the server's, and each daemon's pool and LISTEN
    const apiRecoveredAfterTerminate = await untilOk(batchPath);
    const before = await completed(batchUuid);
    const progressAfterTerminateStarted = Date.now();
    await waitFor(async () => (await completed(batchUuid)) > before + 50, 30_000, 50);
    const daemonsProgressAfterTerminate = Date.now() - progressAfterTerminateStarted;

    // 2. The network hangs: every call must still answer, 503, within the server's deadline.
    proxy.hang();
    const hung = await Promise.all([
      timed(batchPath),
      timed('/v1/files'),
      timed('/v1/batches'),
      timed('/healthz'),
      timed('/api/dashboard/batches'),
      timed(`/api/dashboard/batches/${batch.id}/progress`),
    ]);
    // Answered at all (timed's guard above), from the deadline: a wall-clock bound here (the deadline
    // + 4 s) was a speed check on a loaded machine, which schedules six answers late.
    for (const r of hung) expect(r.status).toBe(503);
    expect(hung[0]!.code).toBe('database_unavailable');
    await new Promise((r) => setTimeout(r, 1500));

    // 3. The database refuses connections.
    await proxy.down();
    const refused = await Promise.all([timed(batchPath), timed('/v1/files')]);
    for (const r of refused) expect(r.status).toBe(503);
    const stalled = await completed(batchUuid);
    await new Promise((r) => setTimeout(r, 1500));

    // Back: the API and the daemons recover without any help.
    const back = Date.now();
    await proxy.up();
    const apiRecoveredAfterOutage = await untilOk(batchPath);
    await waitFor(async () => (await completed(batchUuid)) > stalled + 50, 30_000, 50);
    const daemonsRecoveredAfterOutage = Date.now() - back;

    const done = await waitFor(
      async () => {
        // A 503 here is the server's 1 s deadline on a loaded machine while the daemons catch up
        // (a live batch's counts read its 1,500 rows), not a failed recovery: untilOk above proved
        // the API back. Without this, one such 503 (or six in a row with the client's retries)
        // failed the test at load 15-17.
        const b = await client.batches.retrieve(batch.id).catch((err: unknown) => {
          if (err instanceof OpenAI.APIError && err.status === 503) return null;
          throw err;
        });
        return b?.status === 'completed' ? b : null;
      },
      120_000,
      250,
    );
    expect(done.request_counts).toMatchObject({ total: REQUESTS, completed: REQUESTS, failed: 0 });
    const { rows } = await db.pool.query(
      `SELECT state, count(*)::int AS n FROM ${db.schema}.requests WHERE batch_id = $1 GROUP BY state`,
      [batchUuid],
    );
    expect(rows).toEqual([{ state: 'completed', n: REQUESTS }]);
    const sent = [...mock.countsByCustomId.values()];
    const duplicates = sent.reduce((sum, n) => sum + (n - 1), 0);
    expect(sent).toHaveLength(REQUESTS);
    // Results are kept in memory and written once the database is back: at most what was in
    // flight (16) at each of the three cuts goes out twice.
    expect(duplicates).toBeLessThanOrEqual(3 * 16);
    expect(mock.maxInFlight.byModel.get('gpt-test')).toBeLessThanOrEqual(16);
    // The daemons' error logs from the outage never carry the upstream key.
    expect(fleet.logs()).toContain('failed');
    expect(fleet.logs()).not.toContain('sk-outage');
    console.log(
      JSON.stringify({
        scenario: 'database-outage',
        requests: REQUESTS,
        sessionsTerminated: killed[0].n,
        apiRecoveredAfterTerminateMs: apiRecoveredAfterTerminate,
        daemonsProgressAfterTerminateMs: daemonsProgressAfterTerminate,
        outage503MsMax: Math.max(...hung.map((r) => r.ms), ...refused.map((r) => r.ms)),
        apiRecoveredAfterOutageMs: apiRecoveredAfterOutage,
        daemonsRecoveredAfterOutageMs: daemonsRecoveredAfterOutage,
        duplicates,
      }),
    );
  }, 240_000);
});
