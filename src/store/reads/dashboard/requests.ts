import type pg from 'pg';
import { failureCodeSql } from '../../../db/sql/results/failure-code.js';
import { storedBody } from '../../../domain/body-codec.js';
import { NotFoundError } from '../../../domain/errors.js';
import type { RequestState } from '../../../domain/request-state.js';
import { isRetriableFailureCode } from '../../../domain/retry.js';
import { assertId } from '../../rows.js';
import { batchRowOf } from './scope.js';

/**
 * A batch's requests for the dashboard's table, one request's details and the summary of its
 * failures. Every read is bounded by the batch's size (the API caps a file at 50,000 lines by
 * default): pages in line order stop at the page's end (requests_batch_line_idx); the state filter
 * goes through requests_batch_state_idx; a sort by latency or attempts is a top-N sort over the
 * batch's matching rows, and a total a count of them (measured in bench/dashboard-queries.ts).
 */

export interface RequestSummary {
  id: string;
  lineNumber: number;
  customId: string | null;
  model: string;
  state: RequestState;
  attempt: number;
  statusCode: number | null;
  errorCode: string | null;
  /** Last attempt's duration, from being sent to its outcome (so far, while in flight). */
  latencyMs: number | null;
  completedAt: Date | null;
}

type SummaryRow = {
  id: string;
  line_number: number;
  custom_id: string | null;
  model: string;
  effective_state: RequestState;
  attempt: number;
  response_status: number | null;
  effective_error_code: string | null;
  latency_ms: number | null;
  completed_at: Date | null;
};

/** A request_view row (with its template's custom_id and a latency_ms column) as a table row. */
function toRequestSummary(r: SummaryRow): RequestSummary {
  return {
    id: r.id,
    lineNumber: r.line_number,
    customId: r.custom_id,
    model: r.model,
    state: r.effective_state,
    attempt: r.attempt,
    statusCode: r.response_status,
    errorCode: r.effective_error_code,
    latencyMs: r.latency_ms === null ? null : Math.round(r.latency_ms),
    completedAt: r.completed_at,
  };
}

export const REQUEST_SORTS = ['line', 'latency', 'attempts'] as const;
export type RequestSort = (typeof REQUEST_SORTS)[number];

export interface ListRequestSummariesOptions {
  owner: string | null;
  state?: RequestState;
  /** Only failed requests with this failure code (failure-code.ts: "429", "request_timeout", …). */
  code?: string;
  /** Only requests whose custom_id contains this text. */
  search?: string;
  /** Default `line` (input order); `latency` and `attempts` sort descending unless `order` is asc. */
  sort?: RequestSort;
  order?: 'asc' | 'desc';
  /** In line order: the page starting at this line (the first matching line at or after it). */
  fromLine?: number;
  /** In line order: the page ending just before this line (the previous page). */
  beforeLine?: number;
  /** In line order, as before: the page after this line. */
  afterLine?: number;
  /** In latency or attempts order: rows to skip. */
  offset?: number;
  limit?: number;
}

export interface RequestSummaryPage {
  data: RequestSummary[];
  /** Matching rows after this page. */
  hasMore: boolean;
  /** Matching rows before this page. */
  hasPrevious: boolean;
  /** Rows matching the filters. */
  total: number;
  /** In latency or attempts order: the rows skipped; null in line order. */
  offset: number | null;
}

/** Largest offset accepted: a sorted page past it reads the whole sort for nothing useful. */
export const MAX_OFFSET = 100_000;

/** One page of a batch's requests, without bodies (the table of the detail page), and their total. */
export async function listRequestSummaries(
  pool: pg.Pool,
  s: string,
  batchId: string,
  options: ListRequestSummariesOptions,
): Promise<RequestSummaryPage> {
  const batch = await batchRowOf(pool, s, batchId, options.owner);
  const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
  const search = options.search || null;
  const sort = options.sort ?? 'line';
  const code = options.code || null;
  // The state a row is stored in, given the state it is shown in (request_view): pending rows of a
  // cancelled or expired batch read canceled (a cancel rewrites no rows), every other state is
  // stored as shown; a failure code implies the failed state. Stated as well as the shown state,
  // so the planner reads the batch's rows of that state (requests_batch_state_idx) and not all of
  // them: the live batch's pending page estimated 48 rows of 4,936 through the view's CASE, joined
  // every one to its template before its top-N sort (24,769 buffers, 40 ms at load 15), and its
  // count joined them all again (19,834 buffers); now 342 and 13 buffers (bigdb, 10M finished rows).
  const stored =
    code !== null
      ? `AND r.state = 'failed'`
      : options.state === undefined
        ? ''
        : options.state === 'canceled'
          ? `AND r.state IN ('canceled', 'pending')`
          : 'AND r.state = $2';
  // $1 batch, $2 state, $3 code: the filters of the rows themselves.
  const matching = `r.batch_id = $1 AND ($2::text IS NULL OR r.effective_state = $2) ${stored}
        AND ($3::text IS NULL OR (${failureCodeSql('r')}) = $3)`;
  const filters = [batchId, options.state ?? null, code];
  const rowColumns = `r.id, r.line_number, r.model, r.effective_state, r.attempt, r.response_status,
            r.effective_error_code, r.completed_at,
            (extract(epoch FROM (coalesce(r.completed_at, CASE WHEN r.state = 'processing' THEN now() END)
                                 - r.started_at)) * 1000)::float8 AS latency_ms`;
  // The page's rows with their custom_id; `tail` (conditions on r, ORDER BY, LIMIT; parameters from
  // $6) picks them. $4 search, $5 the batch's input file.
  // A custom_id search reads the file's matching templates once and joins only them to their
  // requests by line (joining every request to its template first took 1.7 s for a 100k-request
  // batch). Without one, the page is picked from the requests alone and only its rows are joined to
  // their templates (every request has its template's line): sorting an ended batch of 10,000 by
  // latency joined all 10,000 first (50,475 buffers, 211 ms at load 15); now 747 buffers, the
  // batch's own rows and the page's 51 templates.
  const pageSql = (tail: string) =>
    search === null
      ? `SELECT p.*, t.custom_id
           FROM (SELECT ${rowColumns} FROM ${s}.request_view r WHERE ${matching} ${tail}) p
           JOIN ${s}.request_templates t ON t.file_id = $5 AND t.line_number = p.line_number
                                         AND ($4::text IS NULL OR strpos(t.custom_id, $4) > 0)`
      : `WITH templates AS MATERIALIZED (
           SELECT line_number, custom_id FROM ${s}.request_templates
            WHERE file_id = $5 AND strpos(custom_id, $4) > 0
         )
         SELECT ${rowColumns}, t.custom_id
           FROM templates t JOIN ${s}.request_view r ON r.batch_id = $1 AND r.line_number = t.line_number
          WHERE ${matching} ${tail}`;
  const pageParams = [...filters, search, batch.file_id];
  // Rows matching the filters (`cond`: more conditions on r; the search's parameters from $`at`):
  // the requests alone unless a search needs their templates.
  const searchParams = search === null ? [] : [search, batch.file_id];
  const matchingSql = (select: string, cond: string, at: number, suffix = '') =>
    search === null
      ? `SELECT ${select} FROM ${s}.request_view r WHERE ${matching} ${cond} ${suffix}`
      : `SELECT ${select} FROM ${s}.request_view r
          WHERE ${matching} ${cond}
            AND EXISTS (SELECT 1 FROM ${s}.request_templates t
                         WHERE t.file_id = $${at + 1} AND t.line_number = r.line_number
                           AND strpos(t.custom_id, $${at}) > 0) ${suffix}`;
  const filtered = options.state !== undefined || code !== null || search !== null;
  const countTotal = async () =>
    filtered
      ? (
          await pool.query<{ n: number }>(matchingSql('count(*)::int AS n', '', 4), [
            ...filters,
            ...searchParams,
          ])
        ).rows[0]!.n
      : batch.total_requests;

  if (sort !== 'line') {
    const offset = Math.min(options.offset ?? 0, MAX_OFFSET);
    const column = sort === 'latency' ? 'latency_ms' : 'attempt';
    const direction = options.order === 'asc' ? 'ASC' : 'DESC';
    const order = `ORDER BY ${column} ${direction} NULLS LAST, line_number`;
    const { rows } = await pool.query<SummaryRow>(
      `SELECT * FROM (${pageSql(`${order} LIMIT $6 OFFSET $7`)}) page ${order}`,
      [...pageParams, limit + 1, offset],
    );
    return {
      data: rows.slice(0, limit).map(toRequestSummary),
      hasMore: rows.length > limit,
      hasPrevious: offset > 0,
      total: await countTotal(),
      offset,
    };
  }

  // Line order, keyset by line: forwards from a line, or backwards from one (the previous page).
  const backwards = options.beforeLine !== undefined;
  const bound = backwards
    ? options.beforeLine!
    : options.fromLine !== undefined
      ? options.fromLine - 1
      : (options.afterLine ?? 0);
  const { rows } = await pool.query<SummaryRow>(
    backwards
      ? `SELECT * FROM (${pageSql('AND r.line_number < $6 ORDER BY r.line_number DESC LIMIT $7')}) page
          ORDER BY line_number`
      : `SELECT * FROM (${pageSql('AND r.line_number > $6 ORDER BY r.line_number LIMIT $7')}) page
          ORDER BY line_number`,
    [...pageParams, bound, limit + 1],
  );
  const extra = rows.length > limit;
  const page = backwards ? rows.slice(extra ? 1 : 0) : rows.slice(0, limit);
  // The other direction: is there a matching row beyond the page (or beyond the bound, if empty)?
  // Forwards from the start (lines are >= 1) nothing lies before: the first page asks nothing more
  // (with a search, that question read the file's templates a second time).
  const edge = backwards ? (page.at(-1)?.line_number ?? bound - 1) : (page[0]?.line_number ?? bound + 1);
  const beyond =
    !backwards && bound < 1
      ? false
      : ((
          await pool.query(matchingSql('1', `AND r.line_number ${backwards ? '>' : '<'} $4`, 5, 'LIMIT 1'), [
            ...filters,
            edge,
            ...searchParams,
          ])
        ).rowCount ?? 0) > 0;
  return {
    data: page.map(toRequestSummary),
    hasMore: backwards ? beyond : extra,
    hasPrevious: backwards ? extra : beyond,
    total: await countTotal(),
    offset: null,
  };
}

/** A failed outcome that a retry put back to pending (request_failures). */
export interface PastFailure {
  attempt: number;
  startedAt: Date | null;
  failedAt: Date;
  statusCode: number | null;
  errorCode: string | null;
  errorMessage: string | null;
  /** The upstream's answer, its first 4,000 characters. */
  responseBody: string | null;
  retriedAt: Date;
}

export interface RequestDetail extends RequestSummary {
  method: string;
  path: string;
  /** The request body exactly as submitted. */
  body: string;
  responseBody: string | null;
  errorMessage: string | null;
  upstreamRequestId: string | null;
  createdAt: Date;
  startedAt: Date | null;
  notBefore: Date | null;
  /** Earlier failed outcomes, oldest first. */
  history: PastFailure[];
}

const CANCEL_MESSAGES: Record<string, string> = {
  batch_cancelled: 'The batch was cancelled before this request was sent.',
  batch_expired: 'This request could not be executed before the completion window expired.',
};

/** One request with its body, response, error and earlier failures; never the template's upstream key. */
export async function getRequestDetail(
  pool: pg.Pool,
  s: string,
  batchId: string,
  requestId: string,
  owner: string | null,
): Promise<RequestDetail> {
  await batchRowOf(pool, s, batchId, owner);
  assertId('request', requestId);
  const [{ rows }, history] = await Promise.all([
    pool.query(
      `SELECT r.id, r.line_number, t.custom_id, r.model, r.effective_state, r.attempt, r.response_status,
              r.effective_error_code, r.error_message, r.completed_at, r.created_at, r.started_at, r.not_before,
              r.response_body, r.response_body_z, r.upstream_request_id, t.method, t.path, t.body,
              (extract(epoch FROM (r.completed_at - r.started_at)) * 1000)::float8 AS latency_ms
         FROM ${s}.request_view r JOIN ${s}.request_templates t ON t.id = r.template_id
        WHERE r.batch_id = $1 AND r.id = $2`,
      [batchId, requestId],
    ),
    pool.query(
      `SELECT attempt, started_at, failed_at, response_status, error_code, error_message,
              left(response_body, 4000) AS response_body, retried_at
         FROM ${s}.request_failures WHERE request_id = $1 AND batch_id = $2
        ORDER BY failed_at, id`,
      [requestId, batchId],
    ),
  ]);
  const r = rows[0];
  if (!r) throw new NotFoundError('request', requestId);
  return {
    ...toRequestSummary(r),
    errorMessage: r.error_message ?? CANCEL_MESSAGES[r.effective_error_code] ?? null,
    createdAt: r.created_at,
    startedAt: r.started_at,
    notBefore: r.not_before,
    method: r.method,
    path: r.path,
    body: r.body,
    // A completed answer of an ended batch may be stored compressed (migration 0022).
    responseBody: storedBody(r.response_body, r.response_body_z),
    upstreamRequestId: r.upstream_request_id,
    history: history.rows.map((h) => ({
      attempt: h.attempt,
      startedAt: h.started_at,
      failedAt: h.failed_at,
      statusCode: h.response_status,
      errorCode: h.error_code,
      errorMessage: h.error_message,
      responseBody: h.response_body,
      retriedAt: h.retried_at,
    })),
  };
}

export interface FailureSummary {
  /** Requests failed now. */
  failed: number;
  /** Of those, the ones a retry could fix. */
  retriable: number;
  /** Failed requests by failure code, most frequent first. */
  codes: { code: string; count: number; retriable: boolean }[];
  /** Requests put back to pending by retries so far (their failures stay in the history). */
  retried: number;
}

/**
 * A batch's failed requests grouped by failure code, through requests_batch_state_idx: bounded by
 * the batch's failed rows.
 */
export async function failureSummary(
  pool: pg.Pool,
  s: string,
  batchId: string,
  owner: string | null,
  /** The HTTP statuses the daemons retry (default: DEFAULT_RETRYABLE_STATUSES, src/domain/retry.ts). */
  retryableStatuses?: ReadonlySet<number>,
): Promise<FailureSummary> {
  const batch = await batchRowOf(pool, s, batchId, owner);
  const { rows } = await pool.query<{ code: string; n: number }>(
    `SELECT ${failureCodeSql('r')} AS code, count(*)::int AS n
       FROM ${s}.requests r WHERE r.batch_id = $1 AND r.state = 'failed'
      GROUP BY 1 ORDER BY 2 DESC, 1`,
    [batchId],
  );
  const codes = rows.map((r) => ({
    code: r.code,
    count: r.n,
    retriable: isRetriableFailureCode(r.code, retryableStatuses),
  }));
  return {
    failed: codes.reduce((n, c) => n + c.count, 0),
    retriable: codes.reduce((n, c) => n + (c.retriable ? c.count : 0), 0),
    codes,
    retried: batch.retried_count,
  };
}
