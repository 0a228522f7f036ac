import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failureCodeSql, retriableFailureCodeSql } from '../../src/db/sql/results/failure-code.js';
import { InvalidStateError } from '../../src/domain/errors.js';
import { isRetriableFailureCode } from '../../src/domain/retry.js';
import type { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { listBatchOverviews } from '../../src/store/reads/dashboard/batch-list.js';
import { batchProgress } from '../../src/store/reads/dashboard/progress.js';
import {
  failureSummary,
  getRequestDetail,
  listRequestSummaries,
} from '../../src/store/reads/dashboard/requests.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

/** Failure triage and retry history in the store: codes, totals, sorts, retry only the retriable. */

let db: TestDb;
let m: PostgresRequestManager;
let s: string;
beforeAll(async () => {
  db = await createTestDb();
  m = db.manager();
  s = m.schema;
});
afterAll(() => db.close());

async function newBatch(owner: string, n: number): Promise<string> {
  const file = await m.createFile(
    'f',
    null,
    Array.from({ length: n }, (_, i) => template(i)),
    { owner },
  );
  return m.createBatch(file, { owner, endpoint: '/v1/chat/completions' });
}

type Outcome =
  | { status: number; body?: string; latencyMs?: number; attempt?: number }
  | { errorCode: string; latencyMs?: number; attempt?: number };

/** Ends each line's request as given (as a daemon's final write would), then finalizes the batch. */
async function finish(batchId: string, outcome: (line: number) => Outcome): Promise<void> {
  const { rows } = await db.pool.query<{ line_number: number }>(
    `SELECT line_number FROM ${s}.requests WHERE batch_id = $1 AND state = 'pending' ORDER BY 1`,
    [batchId],
  );
  for (const { line_number: line } of rows) {
    const o = outcome(line);
    const ok = 'status' in o && o.status < 300;
    await db.pool.query(
      `UPDATE ${s}.requests SET state = $3, attempt = $4, started_at = now() - $5 * interval '1 millisecond',
              completed_at = now(), response_status = $6, response_body = $7, error_code = $8,
              error_message = CASE WHEN $8::text IS NULL THEN NULL ELSE 'it broke' END
        WHERE batch_id = $1 AND line_number = $2`,
      [
        batchId,
        line,
        ok ? 'completed' : 'failed',
        o.attempt ?? 1,
        o.latencyMs ?? 100,
        'status' in o ? o.status : null,
        'status' in o ? (o.body ?? (ok ? '{"ok":true}' : '{"error":{"message":"no"}}')) : null,
        'errorCode' in o ? o.errorCode : null,
      ],
    );
  }
  await m.finalizeBatch(batchId);
}

const QUOTA = '{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}';

/** Lines 1–20: 400 ×6, 429 ×3, 429 out of quota ×1, 503 ×2, request_timeout ×2, invalid_endpoint ×1, ok ×5. */
function mixed(line: number): Outcome {
  if (line <= 6) return { status: 400, latencyMs: 10 * line };
  if (line <= 9) return { status: 429, attempt: 5 };
  if (line === 10) return { status: 429, body: QUOTA };
  if (line <= 12) return { status: 503, attempt: 4, latencyMs: 5000 + line };
  if (line <= 14) return { errorCode: 'request_timeout', latencyMs: 30_000 + line };
  if (line === 15) return { errorCode: 'invalid_endpoint' };
  return { status: 200, latencyMs: line };
}

describe('failure codes', () => {
  it('group failures the way the SQL and the domain agree on', async () => {
    const codes = ['400', '404', '408', '429', '500', '503', '529', 'insufficient_quota'];
    const more = ['request_timeout', 'connection_error', 'invalid_endpoint', 'invalid_response'];
    const { rows } = await db.pool.query<{ code: string; retriable: boolean }>(
      `SELECT code, ${retriableFailureCodeSql('code', '$2::int[]')} AS retriable FROM unnest($1::text[]) AS code`,
      [
        [...codes, ...more],
        [408, 429, 500, 502, 503, 504, 529],
      ],
    );
    for (const r of rows) expect(r.retriable, r.code).toBe(isRetriableFailureCode(r.code));
    expect(rows.filter((r) => r.retriable).map((r) => r.code)).toEqual([
      '408',
      '429',
      '500',
      '503',
      '529',
      'request_timeout',
      'connection_error',
      'invalid_response',
    ]);
    const code = await db.pool.query<{ code: string }>(
      `SELECT ${failureCodeSql('r')} AS code FROM (VALUES
         (429, $1, NULL), (429, '{"error":{"message":"slow down"}}', NULL), (200, 'oops', 'invalid_response'),
         (NULL, NULL, 'request_timeout')) AS r(response_status, response_body, error_code)`,
      [QUOTA],
    );
    expect(code.rows.map((r) => r.code)).toEqual([
      'insufficient_quota',
      '429',
      'invalid_response',
      'request_timeout',
    ]);
  });
});

describe('triage', () => {
  let id: string;
  beforeAll(async () => {
    id = await newBatch('tri', 20);
    await finish(id, mixed);
  });

  it('summarises failures by code, most frequent first, with what a retry could fix', async () => {
    const f = await failureSummary(db.pool, s, id, 'tri');
    expect(f).toEqual({
      failed: 15,
      retriable: 7,
      retried: 0,
      codes: [
        { code: '400', count: 6, retriable: false },
        { code: '429', count: 3, retriable: true },
        { code: '503', count: 2, retriable: true },
        { code: 'request_timeout', count: 2, retriable: true },
        { code: 'insufficient_quota', count: 1, retriable: false },
        { code: 'invalid_endpoint', count: 1, retriable: false },
      ],
    });
    await expect(failureSummary(db.pool, s, id, 'mallory')).rejects.toThrow(/not found/);
  });

  it('filters by failure code and counts the matching rows', async () => {
    const page = await listRequestSummaries(db.pool, s, id, { owner: 'tri', code: '429', limit: 2 });
    expect(page.data.map((r) => r.lineNumber)).toEqual([7, 8]);
    expect(page).toMatchObject({ total: 3, hasMore: true, hasPrevious: false, offset: null });
    const quota = await listRequestSummaries(db.pool, s, id, { owner: 'tri', code: 'insufficient_quota' });
    expect(quota.data.map((r) => r.lineNumber)).toEqual([10]);
    const failed = await listRequestSummaries(db.pool, s, id, { owner: 'tri', state: 'failed', limit: 5 });
    expect(failed.total).toBe(15);
    const all = await listRequestSummaries(db.pool, s, id, { owner: 'tri', limit: 5 });
    expect(all.total).toBe(20);
    const search = await listRequestSummaries(db.pool, s, id, { owner: 'tri', search: 'req-1' });
    expect(search.total).toBe(11); // req-1, req-10 … req-19
  });

  it('pages in line order from a line, and back', async () => {
    const from = await listRequestSummaries(db.pool, s, id, { owner: 'tri', fromLine: 9, limit: 5 });
    expect(from.data.map((r) => r.lineNumber)).toEqual([9, 10, 11, 12, 13]);
    expect(from).toMatchObject({ hasPrevious: true, hasMore: true });
    const back = await listRequestSummaries(db.pool, s, id, { owner: 'tri', beforeLine: 9, limit: 5 });
    expect(back.data.map((r) => r.lineNumber)).toEqual([4, 5, 6, 7, 8]);
    expect(back).toMatchObject({ hasPrevious: true, hasMore: true });
    const start = await listRequestSummaries(db.pool, s, id, { owner: 'tri', beforeLine: 4, limit: 5 });
    expect(start.data.map((r) => r.lineNumber)).toEqual([1, 2, 3]);
    expect(start).toMatchObject({ hasPrevious: false, hasMore: true });
    // A line that does not match the filter: the page starts at the next one that does.
    const failedFrom = await listRequestSummaries(db.pool, s, id, {
      owner: 'tri',
      state: 'failed',
      fromLine: 16,
    });
    expect(failedFrom.data).toEqual([]);
    expect(failedFrom).toMatchObject({ hasPrevious: true, hasMore: false, total: 15 });
  });

  it('sorts by latency and attempts, slowest and most tried first, paged by offset', async () => {
    const slow = await listRequestSummaries(db.pool, s, id, { owner: 'tri', sort: 'latency', limit: 3 });
    expect(slow.data.map((r) => r.lineNumber)).toEqual([14, 13, 12]);
    expect(slow).toMatchObject({ offset: 0, hasPrevious: false, hasMore: true, total: 20 });
    const next = await listRequestSummaries(db.pool, s, id, {
      owner: 'tri',
      sort: 'latency',
      limit: 3,
      offset: 3,
    });
    expect(next.data.map((r) => r.lineNumber)).toEqual([11, 7, 8]); // then 100 ms: lines 7–10 and 15
    expect(next.hasPrevious).toBe(true);
    const fast = await listRequestSummaries(db.pool, s, id, {
      owner: 'tri',
      sort: 'latency',
      order: 'asc',
      state: 'completed',
    });
    expect(fast.data.map((r) => r.lineNumber)).toEqual([16, 17, 18, 19, 20]);
    const tried = await listRequestSummaries(db.pool, s, id, { owner: 'tri', sort: 'attempts', limit: 5 });
    expect(tried.data.map((r) => [r.lineNumber, r.attempt])).toEqual([
      [7, 5],
      [8, 5],
      [9, 5],
      [11, 4],
      [12, 4],
    ]);
  });
});

describe('retry', () => {
  it('requeues only the retriable failures when asked, keeps every failure in the history, and counts them', async () => {
    const id = await newBatch('rt', 20);
    await finish(id, mixed);
    expect((await m.getBatch(id)).status).toBe('completed');
    // Reopening an ended batch must be asked for; refused, nothing changes.
    const refused = m.retryFailedRequests(id, { owner: 'rt', only: 'retriable', reopen: false });
    await expect(refused).rejects.toBeInstanceOf(InvalidStateError);
    await expect(refused).rejects.toMatchObject({ reason: 'batch_ended' });
    expect((await failureSummary(db.pool, s, id, 'rt')).failed).toBe(15);

    expect(await m.retryFailedRequests(id, { owner: 'rt', only: 'retriable' })).toBe(7);
    const reopened = await batchProgress(db.pool, s, id, 'rt');
    expect(reopened.progress.status).toBe('in_progress');
    expect(reopened.batch.retriedRequests).toBe(7);
    expect(reopened.stateCounts).toMatchObject({ pending: 7, failed: 8, completed: 5, processing: 0 });
    // The chart keeps all 15 failures where they happened.
    expect(reopened.throughput.buckets.reduce((n, b) => n + b.failed, 0)).toBe(15);
    const left = await failureSummary(db.pool, s, id, 'rt');
    expect(left).toMatchObject({ failed: 8, retriable: 0, retried: 7 });
    expect(left.codes.map((c) => c.code)).toEqual(['400', 'insufficient_quota', 'invalid_endpoint']);

    // They fail again: the request shows both failures, the chart all 22, the batch still 7 retried.
    await finish(id, (line) => (line <= 9 ? { status: 500 } : { errorCode: 'request_timeout' }));
    const line7 = (await listRequestSummaries(db.pool, s, id, { owner: 'rt', fromLine: 7, limit: 1 }))
      .data[0]!;
    const detail = await getRequestDetail(db.pool, s, id, line7.id, 'rt');
    expect(detail).toMatchObject({ state: 'failed', statusCode: 500 });
    expect(detail.history).toEqual([
      expect.objectContaining({
        statusCode: 429,
        attempt: 5,
        errorCode: null,
        responseBody: '{"error":{"message":"no"}}',
      }),
    ]);
    const ended = await batchProgress(db.pool, s, id, 'rt');
    expect(ended.progress.status).toBe('completed');
    expect(ended.throughput.buckets.reduce((n, b) => n + b.failed, 0)).toBe(22);
    expect(ended.batch.retriedRequests).toBe(7);

    // All of them, reopening: 15 more, 22 retried in all; a second request's history grows.
    expect(await m.retryFailedRequests(id, { owner: 'rt', reopen: true })).toBe(15);
    expect((await m.getBatch(id)).retriedRequests).toBe(22);
    const twice = await getRequestDetail(db.pool, s, id, line7.id, 'rt');
    expect(twice.history.map((h) => h.statusCode)).toEqual([429, 500]);
    // The list shows the same count.
    const list = await listBatchOverviews(db.pool, s, { owner: 'rt' });
    expect(list.data[0]!.batch.retriedRequests).toBe(22);
  });
});

describe('batch list', () => {
  it('counts the matching batches and pages both ways with its position', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await newBatch('pager', 1));
    const newestFirst = [...ids].reverse();
    const first = await listBatchOverviews(db.pool, s, { owner: 'pager', limit: 2 });
    expect(first.data.map((o) => o.batch.id)).toEqual(newestFirst.slice(0, 2));
    expect(first).toMatchObject({ total: 5, totalExact: true, offset: 0, hasNewer: false, hasMore: true });
    const second = await listBatchOverviews(db.pool, s, { owner: 'pager', limit: 2, after: newestFirst[1] });
    expect(second.data.map((o) => o.batch.id)).toEqual(newestFirst.slice(2, 4));
    expect(second).toMatchObject({ offset: 2, hasNewer: true, hasMore: true });
    const last = await listBatchOverviews(db.pool, s, { owner: 'pager', limit: 2, after: newestFirst[3] });
    expect(last.data.map((o) => o.batch.id)).toEqual(newestFirst.slice(4));
    expect(last).toMatchObject({ offset: 4, hasNewer: true, hasMore: false });
    const back = await listBatchOverviews(db.pool, s, { owner: 'pager', limit: 2, before: newestFirst[4] });
    expect(back.data.map((o) => o.batch.id)).toEqual(newestFirst.slice(2, 4));
    expect(back).toMatchObject({ offset: 2, hasNewer: true, hasMore: true });
    const top = await listBatchOverviews(db.pool, s, { owner: 'pager', limit: 2, before: newestFirst[2] });
    expect(top.data.map((o) => o.batch.id)).toEqual(newestFirst.slice(0, 2));
    expect(top).toMatchObject({ offset: 0, hasNewer: false, hasMore: true });
    const none = await listBatchOverviews(db.pool, s, { owner: 'pager', status: 'expired' });
    expect(none).toMatchObject({ data: [], total: 0, offset: 0, hasNewer: false, hasMore: false });
  });
});
