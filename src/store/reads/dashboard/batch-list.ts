import type pg from 'pg';
import { type BatchLifecycleStatus, batchStatusSql } from '../../../domain/batch-lifecycle.js';
import type { BatchInfo, BatchStatus } from '../../../domain/types.js';
import { statusesOf } from '../../batches/batch-status.js';
import { BATCH_COLUMNS, type BatchRow, isUuid, toBatchInfo } from '../../rows.js';

/** The lifecycle status as SQL (batchLifecycleStatus's rules), so lists can filter on it. */
const STATUS_SQL = batchStatusSql('b');

/** Window over which a live batch's current rate is measured. */
const RATE_WINDOW_SECONDS = 60;

/**
 * Totals and positions are counted up to this many batches (an index range of the owner's
 * batches_owner_created_idx entries); past it the list says "10,000+".
 */
export const LIST_COUNT_CAP = 10_000;

export interface BatchOverview {
  batch: BatchInfo;
  progress: BatchStatus;
  /** Requests finished (completed or failed) per second over the last minute; null once ended. */
  recentRate: number | null;
}

export interface ListBatchOverviewsOptions {
  owner: string | null;
  status?: BatchLifecycleStatus;
  /**
   * Matches the start of the batch id (with or without `batch_`, or a message batch's `msgbatch_`),
   * or any metadata key or value.
   */
  search?: string;
  /** Keyset: the page of batches older than this one (the last batch of the previous page). */
  after?: string;
  /** Keyset: the page of batches newer than this one (the first batch of the next page). */
  before?: string;
  limit?: number;
}

export interface BatchOverviewPage {
  data: BatchOverview[];
  /** Older batches exist. */
  hasMore: boolean;
  /** Newer batches exist. */
  hasNewer: boolean;
  /** Batches matching the filters, counted up to LIST_COUNT_CAP (then exact is false). */
  total: number;
  totalExact: boolean;
  /** Matching batches newer than the page's first (its position), up to LIST_COUNT_CAP. */
  offset: number;
}

/** An owner's batches, newest first, with progress counts and current rate, one page at a time. */
export async function listBatchOverviews(
  pool: pg.Pool,
  s: string,
  options: ListBatchOverviewsOptions,
): Promise<BatchOverviewPage> {
  const limit = Math.min(Math.max(options.limit ?? 20, 1), 100);
  const after = options.after !== undefined && isUuid(options.after) ? options.after : null;
  const before =
    after === null && options.before !== undefined && isUuid(options.before) ? options.before : null;
  const search = options.search?.trim() || null;
  // An id prefix is compared without dashes, so "batch_0a1b…", "msgbatch_0a1b…" and "0a1b…-…" match.
  const idPrefix = search
    ? search
        .replace(/^(msg)?batch_/i, '')
        .replace(/-/g, '')
        .toLowerCase()
    : '';
  // $1 owner, $2 status, $3 search, $4 id prefix: the filters every query here shares.
  const filters = `b.deleted_at IS NULL AND ($1::text IS NULL OR b.owner = $1)
        AND ($2::text IS NULL OR ${STATUS_SQL} = $2)
        AND ($3::text IS NULL
             OR (length($4) > 0 AND $4 ~ '^[0-9a-f]+$' AND replace(b.id::text, '-', '') LIKE $4 || '%')
             OR EXISTS (SELECT 1 FROM jsonb_each_text(coalesce(b.metadata, '{}'::jsonb)) m
                         WHERE strpos(lower(m.key), lower($3)) > 0 OR strpos(lower(m.value), lower($3)) > 0))`;
  const params = [options.owner, options.status ?? null, search, idPrefix];
  const cursor = `(SELECT created_at, id FROM ${s}.batches WHERE id = $5)`;
  const { rows } = await pool.query<BatchRow>(
    before === null
      ? `SELECT ${BATCH_COLUMNS} FROM ${s}.batches b
          WHERE ${filters} AND ($5::uuid IS NULL OR (b.created_at, b.id) < ${cursor})
          ORDER BY b.created_at DESC, b.id DESC LIMIT $6`
      : `SELECT * FROM (SELECT ${BATCH_COLUMNS} FROM ${s}.batches b
          WHERE ${filters} AND (b.created_at, b.id) > ${cursor}
          ORDER BY b.created_at, b.id LIMIT $6) newer
          ORDER BY created_at DESC, id DESC`,
    [...params, after ?? before, limit + 1],
  );
  // Reading newer batches, the extra row is the newest; reading older ones, the oldest.
  const page = before === null ? rows.slice(0, limit) : rows.slice(rows.length > limit ? 1 : 0);
  const first = page[0]?.id ?? null;
  const last = page.at(-1)?.id ?? null;
  const capped = (where: string) =>
    `(SELECT count(*)::int FROM (SELECT 1 FROM ${s}.batches b WHERE ${filters} ${where} LIMIT ${LIST_COUNT_CAP + 1}) x)`;
  const [progress, rates, counts] = await Promise.all([
    statusesOf(pool, s, page),
    recentRates(
      pool,
      s,
      page.filter((r) => r.finished_at === null).map((r) => r.id),
    ),
    pool.query<{ total: number; newer: number; older: boolean }>(
      `SELECT ${capped('')} AS total,
              ${capped(`AND $5::uuid IS NOT NULL AND (b.created_at, b.id) > (SELECT created_at, id FROM ${s}.batches WHERE id = $5)`)} AS newer,
              EXISTS (SELECT 1 FROM ${s}.batches b WHERE ${filters}
                         AND (b.created_at, b.id) < (SELECT created_at, id FROM ${s}.batches WHERE id = $6)) AS older`,
      // An empty page past the end: everything matching is newer than where it was asked for.
      [...params, first ?? (after !== null ? null : before), last],
    ),
  ]);
  const c = counts.rows[0]!;
  const now = new Date();
  const total = Math.min(c.total, LIST_COUNT_CAP);
  const offset = first === null && after !== null ? total : Math.min(c.newer, LIST_COUNT_CAP);
  return {
    data: page.map((row, i) => ({
      batch: toBatchInfo(row, now),
      progress: progress[i]!,
      recentRate: row.finished_at === null ? (rates.get(row.id) ?? 0) : null,
    })),
    hasMore: c.older,
    hasNewer: offset > 0,
    total,
    totalExact: c.total <= LIST_COUNT_CAP,
    offset,
  };
}

/** Requests finished per second over the last minute by one batch. */
export async function recentRate(pool: pg.Pool, s: string, batchId: string): Promise<number> {
  return (await recentRates(pool, s, [batchId])).get(batchId) ?? 0;
}

/**
 * Requests finished per second over the last minute, or since the batch started when that is
 * more recent (a young batch's rate would otherwise read far too low and its ETA far too long).
 */
async function recentRates(pool: pg.Pool, s: string, ids: string[]): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map();
  const { rows } = await pool.query<{ id: string; n: number; window_seconds: number }>(
    `SELECT b.id, count(r.id)::int AS n,
            greatest(1, least($2, extract(epoch FROM now() - coalesce(b.in_progress_at, b.created_at))))::float8
              AS window_seconds
       FROM ${s}.batches b
       LEFT JOIN ${s}.requests r ON r.batch_id = b.id AND r.completed_at >= now() - make_interval(secs => $2)
                                AND r.state IN ('completed', 'failed')
      WHERE b.id = ANY($1::uuid[])
      GROUP BY b.id`,
    [ids, RATE_WINDOW_SECONDS],
  );
  return new Map(rows.map((r) => [r.id, r.n / r.window_seconds]));
}
