/**
 * One run of bench/support/big-database-purge.ts from a settled start, and what it cost: the live
 * batch's rate, and figures the machine's load moves less (CPU per request of the daemon process
 * and of its PostgreSQL backends, the purge's backend CPU, WAL, checkpoints during the run).
 *
 * Settling (why two quiet runs differed by 57 %): before every run, whatever its kind, requests and
 * request_templates are VACUUMed and a CHECKPOINT is taken, so no run starts with the previous
 * one's dead rows or dirty pages (a purge's WAL, ~0.4 KB a row, requested checkpoints that then
 * wrote during the next run; the VACUUM after a purge dirties the pages it cleans). After the run
 * its batch is deleted again, so every run dispatches into tables of the same size.
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { deleteBatchSql, deleteChunkSql } from '../../src/db/sql/purge.js';
import type { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { templates } from '../daemon-throughput.js';
import { BackendCpu, type DaemonProcess } from './processes.js';

export interface RunFigures {
  /** The batch's size over its creation-to-end time (PostgreSQL's clock), req/s. */
  rate: number;
  seconds: number;
  /** The 1-minute load average when the run started. */
  load: number;
  /** CPU per request of the daemon process and of its PostgreSQL backends, µs. */
  daemonUs: number;
  daemonPgUs: number;
  /** CPU of the purge's PostgreSQL backends during the run, ms (0 for a quiet run). */
  purgePgMs: number;
  /** WAL written by the whole server during the run, MB (other sessions' included). */
  walMb: number;
  /** Checkpoints that started during the run. */
  checkpoints: number;
  /** WAL of this schema's statements during the run (pg_stat_statements), MB, and the three largest. */
  ourWalMb: number;
  topWal: string;
}

interface Statement {
  calls: number;
  ms: number;
  wal: number;
  fpi: number;
  query: string;
}

/** This schema's statements in pg_stat_statements, by queryid (other engineers' are left out). */
async function statements(pool: pg.Pool, s: string): Promise<Map<string, Statement>> {
  const { rows } = await pool.query(
    `SELECT queryid::text AS id, calls::float8 AS calls, total_exec_time AS ms, wal_bytes::float8 AS wal,
            wal_fpi::float8 AS fpi, query
       FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND strpos(query, $1) > 0`,
    [`${s}.`],
  );
  return new Map(rows.map((r) => [r.id as string, r as Statement]));
}

/** What each statement did between two snapshots, largest WAL first. */
function since(before: Map<string, Statement>, after: Map<string, Statement>): Statement[] {
  const out: Statement[] = [];
  for (const [id, a] of after) {
    const b = before.get(id);
    const d = {
      calls: a.calls - (b?.calls ?? 0),
      ms: a.ms - (b?.ms ?? 0),
      wal: a.wal - (b?.wal ?? 0),
      fpi: a.fpi - (b?.fpi ?? 0),
      query: a.query,
    };
    if (d.calls > 0) out.push(d);
  }
  return out.sort((x, y) => y.wal - x.wal);
}

const brief = (q: string) => q.replace(/\s+/g, ' ').trim().slice(0, 60);

const counters = async (pool: pg.Pool) =>
  (
    await pool.query<{ lsn: string; checkpoints: string }>(
      `SELECT pg_current_wal_lsn()::text AS lsn,
              (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)::text AS checkpoints`,
    )
  ).rows[0]!;

/** VACUUM of the tables a run writes, then a CHECKPOINT: every run starts from the same state. */
export async function settle(pool: pg.Pool, s: string): Promise<void> {
  await pool.query(`VACUUM ${s}.requests`);
  await pool.query(`VACUUM ${s}.request_templates`);
  await pool.query('CHECKPOINT');
}

/**
 * Dispatches a batch of `n` through the daemon process while `during` runs (started with the batch,
 * told to stop at its end); returns the run's figures. The batch and its file are removed after.
 */
export async function measuredRun(
  manager: PostgresRequestManager,
  daemon: DaemonProcess,
  mockUrl: string,
  n: number,
  model: string,
  during: { start(): void; stop(): Promise<void>; pgCpu: BackendCpu | null },
): Promise<RunFigures> {
  const pool = manager.pool;
  const s = manager.schema;
  const fileId = await manager.createFileStream('bench.jsonl', null, templates(mockUrl, n, model));
  const daemonPg = new BackendCpu(pool, daemon.app);
  await daemonPg.mark();
  daemonPg.every(500);
  await during.pgCpu?.mark();
  during.pgCpu?.every(500);
  const before = await counters(pool);
  const stats0 = await statements(pool, s);
  const cpu0 = await daemon.cpuMs();
  const load = loadavg()[0]!;
  const batchId = await manager.createBatch(fileId);
  during.start();
  let seconds: number;
  for (;;) {
    const { rows } = await pool.query(
      `SELECT extract(epoch FROM finished_at - created_at)::float8 AS seconds FROM ${s}.batches
        WHERE id = $1 AND finished_at IS NOT NULL`,
      [batchId],
    );
    if (rows[0]) {
      seconds = rows[0].seconds;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const t = performance.now();
  await during.stop();
  const stopMs = performance.now() - t;
  if (stopMs > 2_000)
    process.stderr.write(`the work beside the batch took ${stopMs.toFixed(0)} ms to stop\n`);
  const cpu1 = await daemon.cpuMs();
  await daemonPg.stop();
  await during.pgCpu?.stop();
  const after = await counters(pool);
  const ran = since(stats0, await statements(pool, s));
  const { rows: wal } = await pool.query(`SELECT pg_wal_lsn_diff($1, $2)::float8 AS b`, [
    after.lsn,
    before.lsn,
  ]);
  const { rows: ok } = await pool.query(
    `SELECT count(*)::int AS n FROM ${s}.requests WHERE batch_id = $1 AND state = 'completed'`,
    [batchId],
  );
  if (ok[0].n !== n) throw new Error(`expected ${n} completed, got ${ok[0].n}`);
  await removeBatch(pool, s, batchId, fileId);
  return {
    rate: n / seconds,
    seconds,
    load,
    daemonUs: ((cpu1 - cpu0) * 1000) / n,
    daemonPgUs: (daemonPg.used() * 1000) / n,
    purgePgMs: during.pgCpu?.used() ?? 0,
    walMb: wal[0].b / 1e6,
    checkpoints: Number(after.checkpoints) - Number(before.checkpoints),
    ourWalMb: ran.reduce((n, x) => n + x.wal, 0) / 1e6,
    topWal: ran
      .slice(0, 3)
      .map(
        (x) =>
          `${(x.wal / 1e6).toFixed(0)} MB (${x.fpi} FPI, ${x.calls} calls, ${x.ms.toFixed(0)} ms) ${brief(x.query)}`,
      )
      .join('; '),
  };
}

/** Deletes a run's batch, its rows and its file at once (not through the purge the bench measures). */
async function removeBatch(pool: pg.Pool, s: string, batchId: string, fileId: string): Promise<void> {
  await pool.query(`UPDATE ${s}.batches SET deleted_at = now() WHERE id = $1`, [batchId]);
  await pool.query(deleteChunkSql(s, 'requests'), [batchId, 1e9]);
  await pool.query(deleteChunkSql(s, 'request_failures'), [batchId, 1e9]);
  await pool.query(deleteBatchSql(s), [batchId]);
  await pool.query(deleteChunkSql(s, 'request_templates'), [fileId, 1e9]);
  await pool.query(`DELETE FROM ${s}.files WHERE id = $1`, [fileId]);
}
