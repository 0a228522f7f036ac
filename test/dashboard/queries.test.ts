import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError } from '../../src/domain/errors.js';
import type { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { listBatchOverviews } from '../../src/store/reads/dashboard/batch-list.js';
import { type Operations, operations } from '../../src/store/reads/dashboard/operations.js';
import { getRequestDetail, listRequestSummaries } from '../../src/store/reads/dashboard/requests.js';
import { SendsMemory } from '../../src/store/reads/dashboard/sends-memory.js';
import { batchThroughput, bucketSecondsFor } from '../../src/store/reads/dashboard/throughput.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

let db: TestDb;
let m: PostgresRequestManager;
beforeAll(async () => {
  db = await createTestDb();
  m = db.manager();
});
afterAll(() => db.close());

async function newBatch(
  owner: string,
  n: number,
  metadata: Record<string, string> | null = null,
  model = 'gpt-test',
) {
  const file = await m.createFile(
    'f',
    null,
    Array.from({ length: n }, (_, i) => template(i, { model })),
    { owner },
  );
  return m.createBatch(file, { owner, metadata, endpoint: '/v1/chat/completions' });
}

/** Moves request rows of a batch (by line number) straight to a state, as a daemon would. */
async function settle(
  batchId: string,
  lines: number[],
  state: 'processing' | 'completed' | 'failed',
  opts: { agoMs?: number; latencyMs?: number; status?: number; daemonId?: string } = {},
) {
  const daemonId = opts.daemonId ?? randomUUID();
  const ago = `${opts.agoMs ?? 0} milliseconds`;
  const latency = `${opts.latencyMs ?? 100} milliseconds`;
  if (state === 'processing') {
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'processing', daemon_id = $3, claimed_at = now(),
              lease_expires_at = now() + interval '1 hour', started_at = now() - $4::interval, attempt = 1
        WHERE batch_id = $1 AND line_number = ANY($2)`,
      [batchId, lines, daemonId, ago],
    );
    return;
  }
  await db.pool.query(
    `UPDATE ${m.schema}.requests SET state = $3, attempt = 1,
            started_at = now() - $4::interval - $5::interval, completed_at = now() - $4::interval,
            response_status = $6::int, response_body = $7,
            error_code = CASE WHEN $3 = 'failed' THEN 'http_' || $6::int END, error_message = CASE WHEN $3 = 'failed' THEN 'bad' END
      WHERE batch_id = $1 AND line_number = ANY($2)`,
    [
      batchId,
      lines,
      state,
      ago,
      latency,
      opts.status ?? (state === 'completed' ? 200 : 400),
      state === 'completed' ? '{"ok":true}' : '{"error":{"message":"bad"}}',
    ],
  );
}

describe('batch overviews', () => {
  it('lists an owner’s batches newest first with progress, rate, filters, search and paging', async () => {
    const a = await newBatch('alice', 10, { project: 'Apollo', run: '7' });
    const b = await newBatch('alice', 4, { project: 'gemini' });
    const c = await newBatch('alice', 3);
    await newBatch('bob', 2, { project: 'Apollo' });
    // a has run for 10 minutes (its rate is over the last minute); b started 20 s ago.
    const startedB = Date.now();
    await db.pool.query(
      `UPDATE ${m.schema}.batches SET in_progress_at = now() - CASE WHEN id = $1 THEN interval '10 minutes' ELSE interval '20 seconds' END
        WHERE id IN ($1, $2)`,
      [a, b],
    );
    await settle(b, [1, 2], 'completed', { agoMs: 1_000 });
    await settle(a, [1, 2, 3], 'completed', { agoMs: 5_000 });
    await settle(a, [4], 'failed', { agoMs: 10_000 });
    await settle(a, [5], 'completed', { agoMs: 120_000 }); // outside the rate window
    await settle(a, [6, 7], 'processing');
    await m.cancelBatch(c, { owner: 'alice' });

    const all = await listBatchOverviews(db.pool, m.schema, { owner: 'alice' });
    // b's rate is over its 20 s so far plus however long the steps above took on this machine.
    const sinceB = 20 + (Date.now() - startedB) / 1000;
    expect(all.data.map((o) => o.batch.id)).toEqual([c, b, a]);
    expect(all.hasMore).toBe(false);
    const first = all.data.find((o) => o.batch.id === a)!;
    expect(first.progress).toMatchObject({
      totalRequests: 10,
      completedRequests: 4,
      failedRequests: 1,
      inProgressRequests: 2,
      pendingRequests: 3,
      canceledRequests: 0,
    });
    expect(first.recentRate).toBeCloseTo(4 / 60, 5);
    const young = all.data.find((o) => o.batch.id === b)!;
    expect(young.recentRate).toBeGreaterThanOrEqual(2 / (sinceB + 1));
    expect(young.recentRate).toBeLessThanOrEqual(2 / 20);
    const cancelled = all.data.find((o) => o.batch.id === c)!;
    expect(cancelled.batch.status).toBe('cancelled');
    expect(cancelled.progress.canceledRequests).toBe(3);
    expect(cancelled.recentRate).toBeNull();

    const byStatus = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', status: 'cancelled' });
    expect(byStatus.data.map((o) => o.batch.id)).toEqual([c]);
    const inProgress = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', status: 'in_progress' });
    expect(inProgress.data.map((o) => o.batch.id)).toEqual([b, a]);

    const apollo = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', search: 'apollo' });
    expect(apollo.data.map((o) => o.batch.id)).toEqual([a]); // bob's Apollo batch stays invisible
    const byKey = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', search: 'run' });
    expect(byKey.data.map((o) => o.batch.id)).toEqual([a]);
    const byId = await listBatchOverviews(db.pool, m.schema, {
      owner: 'alice',
      search: `batch_${b.replace(/-/g, '').slice(0, 12)}`,
    });
    expect(byId.data.map((o) => o.batch.id)).toEqual([b]);
    const noMatch = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', search: "%' OR 1=1 --" });
    expect(noMatch.data).toEqual([]);

    const page1 = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', limit: 2 });
    expect(page1.data.map((o) => o.batch.id)).toEqual([c, b]);
    expect(page1.hasMore).toBe(true);
    const page2 = await listBatchOverviews(db.pool, m.schema, { owner: 'alice', limit: 2, after: b });
    expect(page2.data.map((o) => o.batch.id)).toEqual([a]);
    expect(page2.hasMore).toBe(false);
  });
});

describe('requests of a batch', () => {
  it('pages, filters by effective state and custom_id, and hides other owners’ batches', async () => {
    const id = await newBatch('carol', 30);
    await settle(id, [1, 2, 3, 4, 5], 'completed', { latencyMs: 250 });
    await settle(id, [6, 7, 17], 'failed', { status: 422 });
    await settle(id, [8], 'processing', { agoMs: 1_000 });

    const page = await listRequestSummaries(db.pool, m.schema, id, { owner: 'carol', limit: 4 });
    expect(page.data.map((r) => r.lineNumber)).toEqual([1, 2, 3, 4]);
    expect(page.hasMore).toBe(true);
    expect(page.data[0]).toMatchObject({
      customId: 'req-0',
      state: 'completed',
      statusCode: 200,
      attempt: 1,
    });
    expect(page.data[0]!.latencyMs).toBeGreaterThanOrEqual(249);
    expect(page.data[0]!.latencyMs).toBeLessThanOrEqual(251);
    const next = await listRequestSummaries(db.pool, m.schema, id, {
      owner: 'carol',
      limit: 4,
      afterLine: 4,
    });
    expect(next.data.map((r) => r.lineNumber)).toEqual([5, 6, 7, 8]);
    expect(next.data[3]!.state).toBe('processing');
    expect(next.data[3]!.latencyMs).toBeGreaterThanOrEqual(900); // still running: time so far

    const failed = await listRequestSummaries(db.pool, m.schema, id, { owner: 'carol', state: 'failed' });
    expect(failed.data.map((r) => r.customId)).toEqual(['req-5', 'req-6', 'req-16']);
    expect(failed.data[0]).toMatchObject({ statusCode: 422, errorCode: 'http_422' });
    const search = await listRequestSummaries(db.pool, m.schema, id, { owner: 'carol', search: 'req-1' });
    expect(search.data.map((r) => r.customId)).toEqual([
      'req-1',
      ...Array.from({ length: 10 }, (_, i) => `req-1${i}`),
    ]);
    const both = await listRequestSummaries(db.pool, m.schema, id, {
      owner: 'carol',
      search: '1',
      state: 'failed',
    });
    expect(both.data.map((r) => r.customId)).toEqual(['req-16']);

    await expect(listRequestSummaries(db.pool, m.schema, id, { owner: 'mallory' })).rejects.toBeInstanceOf(
      NotFoundError,
    );

    await m.cancelBatch(id, { owner: 'carol' });
    const canceled = await listRequestSummaries(db.pool, m.schema, id, { owner: 'carol', state: 'canceled' });
    // Pending rows read as canceled at once; the in-flight one waits for its daemon to abort it.
    expect(canceled.data.length).toBe(30 - 5 - 3 - 1);
    expect(canceled.data[0]!.errorCode).toBe('batch_cancelled');
  });

  it('picks a page from the requests before their templates: sorted, searched, paged both ways, totals', async () => {
    const id = await newBatch('erin', 25);
    await settle(id, [3, 12, 21], 'completed', { latencyMs: 900 });
    await settle(id, [1, 2], 'completed', { latencyMs: 50 });
    await settle(id, [13], 'processing', { agoMs: 60_000 });
    const q = (o: Parameters<typeof listRequestSummaries>[3]) =>
      listRequestSummaries(db.pool, m.schema, id, o);

    const slow = await q({ owner: 'erin', sort: 'latency', limit: 3 });
    expect(slow.data.map((r) => [r.lineNumber, r.customId])).toEqual([
      [13, 'req-12'], // in flight for a minute so far
      [3, 'req-2'],
      [12, 'req-11'],
    ]);
    expect(slow).toMatchObject({ hasMore: true, total: 25 });
    const slowSearch = await q({ owner: 'erin', sort: 'latency', search: 'req-1', limit: 2 });
    expect(slowSearch.data.map((r) => r.customId)).toEqual(['req-12', 'req-11']);
    expect(slowSearch).toMatchObject({ hasMore: true, total: 11 });

    const pending = await q({ owner: 'erin', state: 'pending', limit: 5, afterLine: 10 });
    expect(pending.data.map((r) => r.lineNumber)).toEqual([11, 14, 15, 16, 17]);
    expect(pending).toMatchObject({ hasPrevious: true, hasMore: true, total: 25 - 6 });
    const back = await q({ owner: 'erin', state: 'pending', limit: 3, beforeLine: 11 });
    expect(back.data.map((r) => r.lineNumber)).toEqual([8, 9, 10]);
    expect(back).toMatchObject({ hasPrevious: true, hasMore: true });
    const searchBack = await q({ owner: 'erin', search: 'req-2', limit: 2, beforeLine: 25 });
    expect(searchBack.data.map((r) => r.customId)).toEqual(['req-22', 'req-23']);
    expect(searchBack).toMatchObject({ hasPrevious: true, hasMore: true, total: 6 });
    const searchEnd = await q({ owner: 'erin', search: 'req-2', state: 'completed' });
    expect(searchEnd.data.map((r) => r.lineNumber)).toEqual([3, 21]);
    expect(searchEnd).toMatchObject({ hasPrevious: false, hasMore: false, total: 2 });

    await m.cancelBatch(id, { owner: 'erin' });
    expect(await q({ owner: 'erin', state: 'pending' })).toMatchObject({ data: [], total: 0 });
    const canceled = await q({ owner: 'erin', state: 'canceled', limit: 2 });
    expect(canceled.data.map((r) => [r.lineNumber, r.errorCode])).toEqual([
      [4, 'batch_cancelled'],
      [5, 'batch_cancelled'],
    ]);
    expect(canceled).toMatchObject({ hasMore: true, total: 25 - 6 });
  });

  it('shows one request’s body, response and error, never the upstream key', async () => {
    const id = await newBatch('dave', 3);
    await settle(id, [2], 'failed', { status: 400 });
    const [, failed] = (await listRequestSummaries(db.pool, m.schema, id, { owner: 'dave' })).data;
    const detail = await getRequestDetail(db.pool, m.schema, id, failed!.id, 'dave');
    expect(detail).toMatchObject({
      customId: 'req-1',
      state: 'failed',
      statusCode: 400,
      method: 'POST',
      path: '/v1/chat/completions',
      responseBody: '{"error":{"message":"bad"}}',
      errorMessage: 'bad',
    });
    expect(JSON.parse(detail.body).messages[0].content).toBe('hello 1');
    expect(JSON.stringify(detail)).not.toContain('sk-upstream-secret');
    await expect(getRequestDetail(db.pool, m.schema, id, failed!.id, 'eve')).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await expect(getRequestDetail(db.pool, m.schema, id, randomUUID(), 'dave')).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await expect(getRequestDetail(db.pool, m.schema, id, 'nope', 'dave')).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});

describe('throughput', () => {
  it('picks readable bucket sizes', () => {
    expect(bucketSecondsFor(30)).toBe(1);
    expect(bucketSecondsFor(600)).toBe(10);
    expect(bucketSecondsFor(3 * 3600)).toBe(120);
    expect(bucketSecondsFor(30 * 86400)).toBe(43200);
  });

  it('counts finished requests per bucket since the batch started, with empty buckets', async () => {
    const id = await newBatch('frank', 10);
    await db.pool.query(
      `UPDATE ${m.schema}.batches SET in_progress_at = now() - interval '60 seconds' WHERE id = $1`,
      [id],
    );
    await settle(id, [1, 2], 'completed', { agoMs: 55_000 });
    await settle(id, [3], 'failed', { agoMs: 54_500 });
    await settle(id, [4, 5, 6], 'completed', { agoMs: 2_000 });
    // A request aborted by a cancel finished too, neither completed nor failed.
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET state = 'canceled', error_code = 'batch_cancelled',
              completed_at = now() - interval '2 seconds' WHERE batch_id = $1 AND line_number = 7`,
      [id],
    );
    const t = await batchThroughput(db.pool, m.schema, id, 'frank');
    expect(t.bucketSeconds).toBe(1);
    expect(t.buckets.length).toBeGreaterThanOrEqual(60);
    expect(t.buckets.reduce((n, b) => n + b.completed, 0)).toBe(5);
    expect(t.buckets.reduce((n, b) => n + b.failed, 0)).toBe(1);
    const early = t.buckets.slice(3, 7);
    expect(early.reduce((n, b) => n + b.completed + b.failed, 0)).toBe(3);
    expect(t.buckets.slice(10, 50).every((b) => b.completed === 0 && b.failed === 0)).toBe(true);
    await expect(batchThroughput(db.pool, m.schema, id, 'grace')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('operations', () => {
  it('reports per-model load against limits, dispatch rate, daemons and queue depth', async () => {
    const ops0 = await operations(db.pool, m.schema, {
      defaultModelConcurrency: 16,
      deadDaemonAfterMs: 30_000,
    });
    const live = randomUUID();
    const stale = randomUUID();
    await db.pool.query(
      `INSERT INTO ${m.schema}.daemons (id, host, pid, version, started_at, heartbeat_at) VALUES
         ($1, 'node-a', 101, '0.1.0', now() - interval '2 hours', now() - interval '2 seconds'),
         ($2, 'node-b', 102, '0.1.0', now() - interval '3 hours', now() - interval '5 minutes')`,
      [live, stale],
    );
    await db.pool.query(
      `INSERT INTO ${m.schema}.model_limits (model, concurrency) VALUES ('model-x', 4), ('idle', 2)`,
    );
    const x = await newBatch('ops', 12, null, 'model-x');
    const y = await newBatch('ops', 5, null, 'model-y');
    await settle(x, [1, 2, 3], 'processing', { daemonId: live, agoMs: 500 });
    await settle(x, [4, 5], 'completed', { agoMs: 100_000, latencyMs: 1_000 });
    await settle(x, [6], 'completed', { agoMs: 20 * 60_000 }); // before the window
    await settle(y, [1], 'processing', { daemonId: stale, agoMs: 500 });
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET not_before = now() + interval '1 minute', attempt = 1
        WHERE batch_id = $1 AND line_number = 2`,
      [y],
    );
    // Past its not_before: ready again. A follower of a coalesced line is never sent: not counted.
    await db.pool.query(
      `UPDATE ${m.schema}.requests SET not_before = now() - interval '1 second', attempt = 1
        WHERE batch_id = $1 AND line_number = 3`,
      [y],
    );
    await db.pool.query(
      `UPDATE ${m.schema}.requests f SET coalesced_into = l.id FROM ${m.schema}.requests l
        WHERE f.batch_id = $1 AND f.line_number = 4 AND l.batch_id = $1 AND l.line_number = 5`,
      [y],
    );

    const ops = await operations(db.pool, m.schema, {
      defaultModelConcurrency: 16,
      deadDaemonAfterMs: 30_000,
    });
    const mx = ops.models.find((r) => r.model === 'model-x');
    expect(mx).toEqual({ model: 'model-x', inFlight: 3, pending: 6, limit: 4, rate: null });
    expect(ops.models.find((r) => r.model === 'model-y')).toEqual({
      model: 'model-y',
      inFlight: 1,
      pending: 3,
      limit: 16,
      rate: null,
    });
    expect(ops.models.find((r) => r.model === 'idle')).toEqual({
      model: 'idle',
      inFlight: 0,
      pending: 0,
      limit: 2,
      rate: null,
    });

    expect(ops.dispatch.bucketSeconds).toBe(30);
    const sx = ops.dispatch.series.find((s) => s.model === 'model-x')!;
    expect(sx.counts.length).toBe(30);
    expect(sx.counts.reduce((a, b) => a + b, 0)).toBe(5); // 3 in flight + 2 finished in the window
    expect(sx.counts.at(-1)).toBe(3);
    expect(ops.dispatch.series.find((s) => s.model === 'model-y')!.counts.at(-1)).toBe(1);

    const dl = ops.daemons.find((d) => d.id === live)!;
    expect(dl).toMatchObject({ host: 'node-a', pid: 101, health: 'alive', inFlight: 3 });
    expect(ops.daemons.find((d) => d.id === stale)).toMatchObject({ health: 'stale', inFlight: 1 });

    expect(ops.queue.liveBatches - ops0.queue.liveBatches).toBe(2);
    expect(ops.queue.pending - ops0.queue.pending).toBe(9);
    expect(ops.queue.ready - ops0.queue.ready).toBe(8);
    expect(ops.queue.inFlight - ops0.queue.inFlight).toBe(4);
  });

  it('remembers the sends it has read: a later poll reads only the newer rows and draws the same chart', async () => {
    const sends = new SendsMemory();
    const opts = { owner: 'mem', defaultModelConcurrency: 4, deadDaemonAfterMs: 30_000 };
    const chart = (o: Operations) => o.dispatch.series.find((x) => x.model === 'model-mem')?.counts ?? [];
    const total = (o: Operations) => chart(o).reduce((a, b) => a + b, 0);
    const x = await newBatch('mem', 10, null, 'model-mem');
    await settle(x, [1, 2], 'completed', { agoMs: 100_000 });
    await settle(x, [3], 'processing', { agoMs: 500 });
    const first = await operations(db.pool, m.schema, { ...opts, sends });
    expect(chart(first)).toEqual(chart(await operations(db.pool, m.schema, opts)));
    expect(total(first)).toBe(3);

    await settle(x, [3, 4, 5], 'completed'); // finished just now
    const second = await operations(db.pool, m.schema, { ...opts, sends });
    expect(chart(second)).toEqual(chart(await operations(db.pool, m.schema, opts)));
    expect(total(second)).toBe(5);
    expect(chart(second).at(-1)).toBe(3);

    // Rows kept are not read again: deleted behind its back, they still count.
    await db.pool.query(`DELETE FROM ${m.schema}.requests WHERE batch_id = $1 AND line_number IN (1, 2)`, [
      x,
    ]);
    expect(total(await operations(db.pool, m.schema, opts))).toBe(3);
    expect(total(await operations(db.pool, m.schema, { ...opts, sends }))).toBe(5);
    // Another owner's polls have a memory of their own.
    expect(total(await operations(db.pool, m.schema, { ...opts, owner: 'someone-else', sends }))).toBe(0);
  });

  it("scopes load, dispatch, daemons' counts and queue to the owner; lists only its and configured models", async () => {
    const daemon = randomUUID();
    await db.pool.query(
      `INSERT INTO ${m.schema}.daemons (id, host, pid, version) VALUES ($1, 'node-s', 201, '0.1.0')`,
      [daemon],
    );
    // model_limits holds the configured model and, seeded by a daemon, the other owner's model.
    await db.pool.query(
      `INSERT INTO ${m.schema}.model_limits (model, concurrency) VALUES ('configured-model', 8), ('b-secret', 3)`,
    );
    const a = await newBatch('scope-a', 4, null, 'a-model');
    const b = await newBatch('scope-b', 5, null, 'b-secret');
    await settle(a, [1], 'processing', { daemonId: daemon, agoMs: 500 });
    await settle(a, [2], 'completed', { agoMs: 10_000 });
    await settle(b, [1, 2], 'processing', { daemonId: daemon, agoMs: 500 });
    await settle(b, [3], 'completed', { agoMs: 10_000 });

    const of = (owner: string | null) =>
      operations(db.pool, m.schema, {
        owner,
        configuredModels: ['configured-model'],
        defaultModelConcurrency: 16,
        deadDaemonAfterMs: 30_000,
      });
    const opsA = await of('scope-a');
    expect(opsA.models).toEqual([
      { model: 'a-model', inFlight: 1, pending: 2, limit: 16, rate: null },
      { model: 'configured-model', inFlight: 0, pending: 0, limit: 8, rate: null },
    ]);
    expect(opsA.dispatch.series.map((x) => x.model)).toEqual(['a-model']);
    expect(opsA.dispatch.series[0]!.counts.reduce((x, y) => x + y, 0)).toBe(2);
    expect(opsA.daemons.find((d) => d.id === daemon)).toMatchObject({ host: 'node-s', inFlight: 1 });
    expect(opsA.queue).toEqual({ pending: 2, ready: 2, inFlight: 1, liveBatches: 1 });
    expect(JSON.stringify(opsA)).not.toContain('b-secret');

    const opsB = await of('scope-b');
    expect(opsB.models).toEqual([
      { model: 'b-secret', inFlight: 2, pending: 2, limit: 3, rate: null },
      { model: 'configured-model', inFlight: 0, pending: 0, limit: 8, rate: null },
    ]);
    expect(opsB.daemons.find((d) => d.id === daemon)).toMatchObject({ inFlight: 2 });
    expect(opsB.queue).toEqual({ pending: 2, ready: 2, inFlight: 2, liveBatches: 1 });

    // An owner with nothing sees the daemons and the configured model only, all idle.
    const opsC = await of('scope-c');
    expect(opsC.models).toEqual([
      { model: 'configured-model', inFlight: 0, pending: 0, limit: 8, rate: null },
    ]);
    expect(opsC.dispatch.series).toEqual([]);
    expect(opsC.daemons.find((d) => d.id === daemon)).toMatchObject({ inFlight: 0 });
    expect(opsC.queue).toEqual({ pending: 0, ready: 0, inFlight: 0, liveBatches: 0 });

    // Every owner (library callers): both.
    const all = await of(null);
    expect(all.daemons.find((d) => d.id === daemon)).toMatchObject({ inFlight: 3 });
    expect(all.models.map((x) => x.model)).toEqual(expect.arrayContaining(['a-model', 'b-secret']));
  });
});
