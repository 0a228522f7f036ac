import type pg from 'pg';
import { zipBody } from '../domain/body-codec.js';
import { checkPace, type PaceClock, Pacer } from './pace.js';
import { answersToCompressSql } from './sql/compression/answers-to-compress.js';
import { compressibleBatchesSql } from './sql/compression/compressible-batches.js';
import { markBatchCompressedSql } from './sql/compression/mark-batch-compressed.js';
import { writeCompressedAnswersSql } from './sql/compression/write-compressed-answers.js';
import { withTransaction } from './transaction.js';

/**
 * Cold storage (issue 14, migration 0022): the answers of ended batches are rewritten compressed
 * (src/domain/body-codec.ts) in the background, so the hot path (claim, send, outcome write) is
 * never slowed: a live batch's rows are never walked, the outcome write stores text as before.
 * Daemons run it from their maintenance loop, one at a time (a transaction-level advisory lock
 * taken with try, as the purge's: a daemon finding another at work skips its turn), in chunks of
 * ~1,000 rows (or 8 MB of answers) a transaction, paced (DAEMON_COMPRESS_PACE), compressing in libuv's thread pool so the
 * daemon's event loop keeps dispatching. Existing databases are compressed by the same pass: there
 * is no back-fill step.
 */

export interface CompressOptions {
  /** Batches that ended at least this long ago (ms; default 0). */
  afterMs?: number;
  /** Rows walked per transaction (default 1,000). */
  chunkRows?: number;
  /** Answer bytes read per transaction at most (default 8 MB; one row at least). */
  chunkBytes?: number;
  /** Another compressor at work: 'wait' for it, or 'skip' this run (daemons). Default 'wait'. */
  whenBusy?: 'wait' | 'skip';
  /** statement_timeout of each statement, ms (default 60,000). */
  statementTimeoutMs?: number;
  /** Asked between transactions: true stops the pass there (a stopping daemon). */
  shouldStop?: () => boolean;
  /**
   * Before each chunk the pass waits this many times as long as it worked since its last wait
   * (src/db/pace.ts; default 0: back to back, for `compressFinished()` run by hand; daemons pass
   * DAEMON_COMPRESS_PACE). Work that took longer (a loaded machine) is followed by a longer wait:
   * the pass stays a fixed share of the time whatever the load. A stop ends a wait within 250 ms.
   */
  pace?: number;
  /** The clock the pace waits on (tests give their own; default: the real one). */
  clock?: PaceClock;
}

export interface CompressReport {
  batches: number;
  answers: number;
  /** UTF-8 bytes of the answers compressed, and what they take compressed. */
  bytesBefore: number;
  bytesAfter: number;
  /** Stopped early: another compressor was at work ('skip') or shouldStop said so. */
  incomplete: boolean;
}

export const DEFAULT_COMPRESS_CHUNK_ROWS = 1_000;
/**
 * Daemons compress at most a quarter of the time: measured with bench/compress-under-dispatch.ts
 * (3,000-request live batch, 5,000-answer backlog, one run each, load ~10 on 2 cores), a daemon
 * compressing back to back in chunks of 2,000 dispatched at 229 req/s against 1,012 req/s without
 * (the deflate and the chunk's rows share the two cores with dispatch and PostgreSQL).
 */
export const DAEMON_COMPRESS_PACE = 3;
// With the pace and one deflate at a time: see docs/decisions/retention.md for the figures.
const DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024;
/**
 * Larger answers stay text: PostgreSQL already compresses rows over ~2 KB (TOAST), and readers
 * inflate a compressed body whole on their event loop (~50 µs for 1.7 KB; a 64 KB one stays
 * around a millisecond).
 */
export const MAX_COMPRESSED_ANSWER_BYTES = 64 * 1024;
const CANDIDATES = 100;

/** Only one compressor works at a time. */
export function compressLockKey(schema: string): string {
  return `fusillade.compress:${schema}`;
}

class Stop extends Error {}

/** Compresses the answers of every ended batch not compressed yet; see CompressOptions. */
export async function compressFinished(
  pool: pg.Pool,
  schema: string,
  options: CompressOptions = {},
): Promise<CompressReport> {
  const report: CompressReport = { batches: 0, answers: 0, bytesBefore: 0, bytesAfter: 0, incomplete: false };
  const chunkRows = options.chunkRows ?? DEFAULT_COMPRESS_CHUNK_ROWS;
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const lock =
    options.whenBusy === 'skip'
      ? 'SELECT pg_try_advisory_xact_lock(hashtext($1)) AS ok'
      : 'SELECT pg_advisory_xact_lock(hashtext($1)), true AS ok';
  const timeoutMs = Math.max(1, Math.floor(options.statementTimeoutMs ?? 60_000));
  const stop = () => options.shouldStop?.() === true;
  const pacer = new Pacer(checkPace(options.pace ?? 0, 'compress pace'), options.clock);

  async function tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    if (options.shouldStop?.()) throw new Stop();
    return withTransaction(
      pool,
      async (c) => {
        const { rows } = await c.query<{ ok: boolean }>(lock, [compressLockKey(schema)]);
        if (!rows[0]?.ok) throw new Stop();
        return fn(c);
      },
      { timeoutMs },
    );
  }

  /** One chunk after line `after`: the last line walked, or null at the batch's end. */
  /**
   * One chunk after line `after`: the last line walked, or null at the batch's end. The rows are
   * read and compressed outside any transaction, and written in a short one holding the lock: a
   * transaction left open while the chunk compressed (seconds on a busy daemon's event loop) held
   * back PostgreSQL's cleanup of the live batch's dead row versions. Two compressors that read the
   * same chunk (one waiting for the lock) write it once: the write skips rows already compressed.
   */
  async function chunk(batchId: string, after: number): Promise<number | null> {
    await pacer.pause(stop);
    if (stop()) throw new Stop();
    const { rows } = await pool.query<{ id: string; line_number: number; body: string | null }>(
      answersToCompressSql(schema),
      [batchId, after, chunkRows, chunkBytes, MAX_COMPRESSED_ANSWER_BYTES],
    );
    if (rows.length === 0) return null;
    const todo = rows.filter((r) => r.body !== null);
    if (todo.length > 0) {
      // One at a time: one thread of libuv's pool busy, not four competing with the daemon's
      // own thread for the two cores (Promise.all over the chunk ran all four).
      const zipped: Buffer[] = [];
      for (const r of todo) zipped.push(await zipBody(r.body!));
      await tx((c) => c.query(writeCompressedAnswersSql(schema), [todo.map((r) => r.id), zipped]));
      report.answers += todo.length;
      for (let i = 0; i < todo.length; i++) {
        report.bytesBefore += Buffer.byteLength(todo[i]!.body!);
        report.bytesAfter += zipped[i]!.length;
      }
    }
    return rows[rows.length - 1]!.line_number;
  }

  const seen = new Set<string>();
  try {
    for (;;) {
      const { rows } = await pool.query<{ id: string; finished_at: string }>(compressibleBatchesSql(schema), [
        options.afterMs ?? 0,
        CANDIDATES,
      ]);
      const fresh = rows.filter((b) => !seen.has(`${b.id}@${b.finished_at}`));
      if (fresh.length === 0) return report;
      for (const b of fresh) {
        seen.add(`${b.id}@${b.finished_at}`);
        for (let after: number | null = 0; after !== null; ) {
          after = await chunk(b.id, after);
        }
        await pool.query(markBatchCompressedSql(schema), [b.id, b.finished_at]);
        report.batches++;
      }
    }
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    report.incomplete = true;
    return report;
  }
}

/** One line saying what a pass compressed, for the daemon's log. */
export function describeCompress(r: CompressReport): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const kept = r.bytesBefore > 0 ? ` (${n(r.bytesBefore)} bytes to ${n(r.bytesAfter)})` : '';
  return `compressed ${n(r.answers)} answers of ${n(r.batches)} batches${kept}${r.incomplete ? ' (stopped early)' : ''}`;
}
