import type pg from 'pg';
import { checkPace, type PaceClock, Pacer } from './pace.js';
import {
  deleteBatchSql,
  deleteChunkSql,
  deleteInputFileSql,
  deleteOutputFilesSql,
  goneBatchesSql,
  goneInputFilesSql,
  markExpiredFilesSql,
  outputGoneBatchesSql,
  purgeLockKey,
  purgePreviewSql,
  retireBatchesSql,
  retireInputFilesSql,
} from './sql/purge.js';
import { withTransaction } from './transaction.js';

/**
 * Retention: removes expired and deleted data in small transactions (what goes and when:
 * src/db/sql/purge.ts). Daemons run it in the background; `fusillade purge` runs it now.
 */

export interface PurgeOptions {
  /**
   * Retention: batches that finished longer ago than this (ms) go, and input files created longer
   * ago that no remaining batch uses. Undefined: nothing goes by age (only expired and deleted data).
   */
  olderThanMs?: number;
  /** Rows deleted per transaction (default 10,000). */
  chunkRows?: number;
  /** Another purger at work: 'wait' for it (the CLI), or 'skip' this run (daemons). Default 'wait'. */
  whenBusy?: 'wait' | 'skip';
  /** statement_timeout of each purge statement, ms (default 60,000). */
  statementTimeoutMs?: number;
  /** Asked between transactions: true stops the purge there (a stopping daemon). */
  shouldStop?: () => boolean;
  /**
   * Before each transaction the purge waits this many times as long as it has worked since its last
   * wait (src/db/pace.ts), so it takes at most 1 / (1 + pace) of the time. Default 0: back to back,
   * for `fusillade purge` and `manager.purge()` run by hand; daemons pass DAEMON_PURGE_PACE.
   */
  pace?: number;
  /** The clock the pace waits on (tests give their own; default: the real one). */
  clock?: PaceClock;
}

/** What a purge removed (or, for previewPurge, would remove). */
export interface PurgeReport {
  batches: number;
  requests: number;
  /** Output and error files. */
  outputFiles: number;
  /** Uploaded (input) files. */
  inputFiles: number;
  templates: number;
  /** The purge stopped early: another purger was at work ('skip') or shouldStop said so. */
  incomplete: boolean;
}

export const DEFAULT_PURGE_CHUNK_ROWS = 10_000;
/**
 * Daemons purge at most a tenth of the time. Measured on the 10M-request bigdb (bench/big-database.ts,
 * a 20k batch dispatching, runs a b b a, 2 cores shared): back to back the batch's rate fell 14.3 %
 * (load 8; the lead's earlier run: 32 %) and the purge took a third of a core; at 9, three sets at
 * load 11-20 gave 2.7, 7.5 and 13.6 % by medians with runs faster and slower than their neighbours
 * by turns (the machine's noise), the purge 1-2 % of a core and the daemon's CPU per request
 * unchanged, for 2,800-7,300 requests purged a second while dispatching (7-19B a month; issue 14
 * asks for 100M). docs/decisions/retention.md ("The paced purge") has the runs.
 */
export const DAEMON_PURGE_PACE = 9;
/** Candidates read per query; the loops come back for more. */
const CANDIDATES = 100;

class Stop extends Error {}

/** Runs a purge now; see PurgeOptions. Safe beside running daemons and other purgers. */
export async function purge(pool: pg.Pool, schema: string, options: PurgeOptions = {}): Promise<PurgeReport> {
  const chunk = options.chunkRows ?? DEFAULT_PURGE_CHUNK_ROWS;
  const retention = options.olderThanMs ?? null;
  const report: PurgeReport = {
    batches: 0,
    requests: 0,
    outputFiles: 0,
    inputFiles: 0,
    templates: 0,
    incomplete: false,
  };
  const lock =
    options.whenBusy === 'skip'
      ? 'SELECT pg_try_advisory_xact_lock(hashtext($1)) AS ok'
      : 'SELECT pg_advisory_xact_lock(hashtext($1)), true AS ok';
  const timeout = Math.max(1, Math.floor(options.statementTimeoutMs ?? 60_000));
  const stop = () => options.shouldStop?.() === true;
  const pacer = new Pacer(checkPace(options.pace ?? 0, 'purge pace'), options.clock);

  /**
   * One transaction holding the purge lock, after the pace's pause; Stop when the lock is taken and
   * we skip, or we must stop.
   */
  async function tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    await pacer.pause(stop);
    if (stop()) throw new Stop();
    return withTransaction(
      pool,
      async (c) => {
        const { rows } = await c.query<{ ok: boolean }>(lock, [purgeLockKey(schema)]);
        if (!rows[0]?.ok) throw new Stop();
        return fn(c);
      },
      { timeoutMs: timeout },
    );
  }
  /** Runs `fn` on every candidate `sql` selects, reading them again until none is left. */
  async function each(sql: string, fn: (id: string) => Promise<void>): Promise<void> {
    for (;;) {
      const { rows } = await pool.query<{ id: string }>(sql, [CANDIDATES]);
      if (rows.length === 0) return;
      for (const r of rows) await fn(r.id);
    }
  }
  /** Deletes `table`'s rows of `key` chunk by chunk; returns how many went. */
  async function chunks(table: Parameters<typeof deleteChunkSql>[1], key: string): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await tx(async (c) => (await c.query(deleteChunkSql(schema, table), [key, chunk])).rows[0].n);
      total += n;
      if (n < chunk) return total;
    }
  }
  const one = async (sql: string, key: string) => tx(async (c) => (await c.query(sql, [key])).rows[0]);

  try {
    await tx(async (c) => {
      await c.query(markExpiredFilesSql(schema));
      if (retention !== null) {
        await c.query(retireBatchesSql(schema), [retention]);
        await c.query(retireInputFilesSql(schema), [retention]);
      }
    });
    await each(goneBatchesSql(schema), async (id) => {
      report.requests += await chunks('requests', id);
      await chunks('request_failures', id);
      const gone = await one(deleteBatchSql(schema), id);
      report.batches += gone.batches;
      report.outputFiles += gone.outputs;
    });
    await each(outputGoneBatchesSql(schema), async (id) => {
      report.requests += await chunks('requests', id);
      await chunks('request_failures', id);
      report.outputFiles += (await one(deleteOutputFilesSql(schema), id)).outputs;
    });
    await each(goneInputFilesSql(schema), async (id) => {
      report.templates += await chunks('request_templates', id);
      report.inputFiles += (await one(deleteInputFileSql(schema), id)).files;
    });
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    report.incomplete = true;
  }
  return report;
}

/** What purge() with the same retention would remove now, removing nothing. */
export async function previewPurge(
  pool: pg.Pool,
  schema: string,
  options: Pick<PurgeOptions, 'olderThanMs'> = {},
): Promise<PurgeReport> {
  const { rows } = await pool.query(purgePreviewSql(schema), [options.olderThanMs ?? null]);
  const r = rows[0];
  return {
    batches: r.batches,
    requests: r.requests,
    outputFiles: r.output_files,
    inputFiles: r.input_files,
    templates: r.templates,
    incomplete: false,
  };
}

/** One line saying what a purge removed, for the CLI and the daemon's log. */
export function describePurge(r: PurgeReport, dryRun = false): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const what = `${n(r.batches)} batches (${n(r.requests)} requests), ${n(r.outputFiles)} output and error files, ${n(r.inputFiles)} input files (${n(r.templates)} templates)`;
  return `${dryRun ? 'would remove' : 'removed'} ${what}${r.incomplete ? ' (stopped early: run it again)' : ''}`;
}
