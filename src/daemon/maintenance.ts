import type pg from 'pg';
import { query, withClient } from '../db/client.js';
import { compressFinished, DAEMON_COMPRESS_PACE, describeCompress } from '../db/compress.js';
import { DAEMON_PURGE_PACE, describePurge, purge } from '../db/purge.js';
import { cancelledBatchesSql, endableBatchesSql, queueDepthSql } from '../db/sql/batches/batch-watch.js';
import { finalizeBatchSql } from '../db/sql/batches/finalize-batch.js';
import { markAtRiskSql } from '../db/sql/queue/at-risk.js';
import { heartbeatSql } from '../db/sql/queue/heartbeat.js';
import { declareLostSql, probeLivenessSql } from '../db/sql/queue/liveness.js';
import { reclaimOrphansSql, reclaimSql, releaseDeadBudgetsSql } from '../db/sql/queue/reclaim.js';
import { inTransaction } from '../db/transaction.js';
import type { DaemonConfig } from '../dispatch/config.js';
import { type DaemonLog, errorFields } from '../dispatch/logger.js';
import { parseDuration } from '../domain/duration.js';
import type { Dispatcher } from './dispatcher.js';
import {
  type FreeLock,
  LIVENESS_PROBE_MS,
  LOCKLESS_HEARTBEAT_MS,
  type LostDaemon,
  LostDaemonTracker,
} from './liveness.js';
import type { DaemonMetrics } from './metrics.js';
import type { Semaphore } from './semaphore.js';

const QUEUE_DEPTH_INTERVAL_MS = 15_000;
/** How often deadlines at risk are judged (src/db/sql/queue/at-risk.ts), and the youngest batch judged. */
const AT_RISK_INTERVAL_MS = 5_000;
const AT_RISK_MIN_SPAN_S = 5;

/** What maintenance needs of its daemon (src/daemon/daemon.ts provides it). */
export interface MaintainedDaemon {
  readonly id: string;
  /** Quoted schema name. */
  readonly schema: string;
  readonly config: DaemonConfig;
  readonly log: DaemonLog;
  readonly metrics: Pick<DaemonMetrics, 'queueDepth' | 'batchesAtRisk' | 'model'>;
  /** Bounds the daemon's concurrent database writers (maxDbWriters). */
  readonly writers: Semaphore;
  readonly dispatcher: Pick<Dispatcher, 'abortBatches' | 'abortExpired' | 'batchIds' | 'size'>;
  /** The pool the daemon's statements run on. */
  readonly db: pg.Pool;
  /** Whether the daemon holds its liveness lock (src/db/sql/queue/liveness.ts). */
  readonly holdsLivenessLock: boolean;
  readonly isStopping: boolean;
  /** Ids this daemon holds (in flight, queued or awaiting their write), for the orphan reclaim. */
  heldIds(): string[];
  /** Batches this daemon holds rows of (in flight or queued), for the cancel check. */
  heldBatchIds(): string[];
  /** Declared lost while alive (`why`): aborts its attempts, hands back its queue, says so (daemon.ts). */
  fenceAfterLost(why: string): void;
  /** Aborts the in-flight requests of these batches and hands back their queued rows; returns how many. */
  abortBatches(batchIds: string[], reason: 'cancelled' | 'expired'): number;
  /** Runs `fn` while no claim runs (src/daemon/pipe.ts withoutClaims). */
  withoutClaims<T>(fn: () => Promise<T>): Promise<T>;
  /** Asks the daemon to refresh budgets and claim soon. */
  poke(): void;
}

/**
 * A daemon's periodic work, each task on its own timer, never overlapping itself, every query with a
 * deadline, failures logged and retried on the next tick (a database outage must not kill them).
 */
export class Maintenance {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly ticks = new Map<string, () => void>();
  private readonly busy = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private readonly lost = new LostDaemonTracker();
  /** Batches whose finalize runs, and whether another was asked for meanwhile. */
  private readonly finalizing = new Map<string, { again: boolean }>();
  private stopped = false;
  private orphansPending = false;

  constructor(private readonly d: MaintainedDaemon) {}

  start(): void {
    const c = this.d.config;
    // While the daemon does not hold its liveness lock (session lost, src/db/sql/queue/liveness.ts), its
    // heartbeat is what tells the others it is alive: it beats often until the lock is back.
    this.every(
      'heartbeat',
      () =>
        this.d.holdsLivenessLock
          ? c.heartbeatIntervalMs
          : Math.min(c.heartbeatIntervalMs, LOCKLESS_HEARTBEAT_MS),
      () => this.heartbeat(),
    );
    this.every('liveness', LIVENESS_PROBE_MS, () => this.probeLiveness(), true);
    this.every('poll', c.pollIntervalMs, () => this.poll());
    this.every(
      'reclaim',
      Math.max(250, Math.min(c.deadDaemonAfterMs / 3, 10_000)),
      () => this.reclaim(),
      true,
    );
    this.every('sweep', Math.max(500, c.pollIntervalMs), () => this.sweep(), true);
    this.every('queue-depth', QUEUE_DEPTH_INTERVAL_MS, () => this.queueDepth(), true);
    this.every('at-risk', AT_RISK_INTERVAL_MS, () => this.atRisk());
    this.every('purge', c.purgeIntervalMs, () => this.purge());
    if (c.compressFinishedBodies) this.every('compress', c.purgeIntervalMs, () => this.compress());
  }

  private every(name: string, ms: number | (() => number), task: () => Promise<void>, runNow = false): void {
    const interval = typeof ms === 'number' ? () => ms : ms;
    const tick = () => {
      if (this.stopped) return;
      this.busy.add(name);
      const run = task()
        .catch((err) => this.d.log.warn(`${name} failed`, errorFields(err)))
        .finally(() => {
          this.busy.delete(name);
          this.running.delete(run);
          if (!this.stopped) this.timers.set(name, setTimeout(tick, interval()));
        });
      this.running.add(run);
    };
    this.ticks.set(name, tick);
    this.timers.set(name, setTimeout(tick, runNow ? 0 : interval()));
  }

  /** Runs a periodic task now unless it is running (its timer then restarts from now). */
  private runNow(name: string): void {
    const tick = this.ticks.get(name);
    if (!tick || this.stopped || this.busy.has(name)) return;
    clearTimeout(this.timers.get(name));
    tick();
  }

  /** The daemon's liveness lock was lost: show life at once (and often, until it is back). */
  livenessLost(): void {
    this.runNow('heartbeat');
  }

  private q(what: string, text: string, values?: unknown[]) {
    return query(this.d.db, this.d.config.dbTimeoutMs, what, text, values);
  }

  private async heartbeat(): Promise<void> {
    const stats = { inFlight: this.d.dispatcher.size, stopping: this.d.isStopping };
    const { rows } = await this.q('heartbeat', heartbeatSql(this.d.schema), [
      this.d.id,
      JSON.stringify(stats),
      this.d.config.deadDaemonAfterMs,
    ]);
    if (rows[0]?.revived) this.d.fenceAfterLost('cut off from the database, its rows were handed to others');
  }

  /**
   * Probes the other daemons' liveness locks; daemons lost for the grace period are reclaimed at
   * once (src/db/sql/queue/liveness.ts).
   */
  private async probeLiveness(): Promise<void> {
    const { rows } = await this.q('liveness probe', probeLivenessSql(this.d.schema), [this.d.id]);
    const lost = this.lost.observe(rows as FreeLock[], Date.now());
    if (lost.length > 0 && !this.d.isStopping) {
      this.lost.forget(lost.map((l) => l.id));
      await this.reclaim(lost);
    }
  }

  /** Poll fallback for missed notifications, deadlines of in-flight batches, missed cancels. */
  private async poll(): Promise<void> {
    this.d.poke();
    const overdue = this.d.dispatcher.abortExpired();
    if (overdue > 0) this.d.log.info('deadline passed: aborted in-flight requests', { n: overdue });
    const batches = this.d.heldBatchIds();
    if (batches.length === 0) return;
    const { rows } = await this.q('cancel check', cancelledBatchesSql(this.d.schema), [batches]);
    const cancelled = rows.filter((r) => r.cancelled).map((r) => r.id as string);
    const expired = rows.filter((r) => !r.cancelled).map((r) => r.id as string);
    const n =
      (cancelled.length > 0 ? this.d.abortBatches(cancelled, 'cancelled') : 0) +
      (expired.length > 0 ? this.d.abortBatches(expired, 'expired') : 0);
    if (n > 0)
      this.d.log.info('cancelled or expired batches found by poll: aborted in-flight requests', { n });
  }

  private async reclaim(lost: LostDaemon[] = []): Promise<void> {
    if (this.orphansPending && !this.d.isStopping) await this.reclaimOrphans();
    // One transaction: daemons whose liveness lock was lost are marked stopped; dead daemons' budgets
    // go first (waiting for any claim still holding one), then their rows and the expired leases, in
    // a snapshot that sees what such a claim took.
    const { rows, budgets, declared } = await this.d.writers.run(() =>
      withClient(this.d.db, this.d.config.dbTimeoutMs, 'reclaim', (client) =>
        inTransaction(
          client,
          async (c) => {
            const declared =
              lost.length > 0
                ? (
                    await c.query(declareLostSql(this.d.schema), [
                      lost.map((l) => l.id),
                      lost.map((l) => l.since),
                    ])
                  ).rows.map((r) => r.id as string)
                : [];
            const released = await c.query(releaseDeadBudgetsSql(this.d.schema), [
              this.d.config.deadDaemonAfterMs,
            ]);
            const reclaimed = await c.query(reclaimSql(this.d.schema), [this.d.config.deadDaemonAfterMs]);
            return { rows: reclaimed.rows, budgets: released.rows, declared };
          },
          { timeoutMs: this.d.config.dbTimeoutMs },
        ),
      ),
    );
    if (declared.length > 0) {
      this.d.log.warn('daemons lost their liveness lock: declared lost', { daemons: declared });
    }
    if (budgets.length > 0) {
      this.d.log.warn('released the slot budgets of dead daemons', {
        daemons: [...new Set(budgets.map((b) => b.daemon_id as string))],
        slots: budgets.reduce((n, b) => n + Number(b.slots), 0),
      });
      this.d.poke();
    }
    if (rows.length > 0) {
      this.d.log.warn('reclaimed requests of dead daemons or expired leases', { n: rows.length });
      this.d.poke();
    }
  }

  private async reclaimOrphans(): Promise<void> {
    this.orphansPending = false;
    // With no claim running: one committing meanwhile would hold rows heldIds() does not list yet.
    const { rows } = await this.d.withoutClaims(() =>
      this.d.writers.run(() =>
        this.q('reclaim orphans', reclaimOrphansSql(this.d.schema), [this.d.id, this.d.heldIds()]),
      ),
    );
    // `again`: another failure asked for one meanwhile, so one more will run.
    this.d.log.debug('orphan reclaim ran', { n: rows.length, again: this.orphansPending });
    if (rows.length > 0) {
      this.d.log.warn('handed back rows claimed by a transaction whose outcome was unknown', {
        n: rows.length,
      });
      this.d.poke();
    }
  }

  /** After a cycle failed mid-commit, rows may be ours in the database but not in memory. */
  reclaimOrphansSoon(): void {
    this.orphansPending = true;
  }

  /** Finalizes batches that may have ended: expired, cancelled, or with nothing left to do. */
  private async sweep(): Promise<void> {
    const { rows } = await this.q('finalize sweep', endableBatchesSql(this.d.schema), [100]);
    await Promise.all(rows.map((r) => this.finalize(r.id as string)));
  }

  /**
   * Finalizes the batch if it has ended. One at a time per batch; a request arriving while one runs
   * runs it once more afterwards: that run's snapshot may have missed a write committed meanwhile
   * (two writes of the batch's last rows committing at once), and nothing else would look again
   * before the sweep.
   */
  private async finalize(batchId: string): Promise<void> {
    const running = this.finalizing.get(batchId);
    if (running) {
      running.again = true;
      return;
    }
    const state = { again: false };
    this.finalizing.set(batchId, state);
    try {
      do {
        state.again = false;
        const { rowCount } = await this.d.writers.run(() =>
          this.q('finalize', finalizeBatchSql(this.d.schema), [batchId]),
        );
        if (rowCount) {
          this.d.log.info('batch finished', { batchId });
          try {
            this.d.config.onBatchFinished?.(batchId);
          } catch (err) {
            this.d.log.warn('onBatchFinished threw', { batchId, ...errorFields(err) });
          }
          break;
        }
      } while (state.again && !this.stopped);
    } finally {
      this.finalizing.delete(batchId);
    }
  }

  finalizeSoon(batchId: string): void {
    if (this.stopped) return;
    const run = this.finalize(batchId)
      .catch((err) =>
        this.d.log.warn('finalize failed; the sweep will retry', { batchId, ...errorFields(err) }),
      )
      .finally(() => this.running.delete(run));
    this.running.add(run);
  }

  private async queueDepth(): Promise<void> {
    const { rows } = await this.q('queue depth', queueDepthSql(this.d.schema));
    this.d.metrics.queueDepth.reset();
    // inc, not set: the models outside the named ones add up under one label.
    for (const r of rows)
      this.d.metrics.queueDepth.inc({ model: this.d.metrics.model(r.model as string) }, Number(r.n));
  }

  /** Raises the batches that would miss their deadline at their current rate (at-risk.ts). */
  private async atRisk(): Promise<void> {
    const { rows } = await this.q('deadlines at risk', markAtRiskSql(this.d.schema), [AT_RISK_MIN_SPAN_S]);
    const r = rows[0] as { at_risk: number; raised: string[] } | undefined;
    this.d.metrics.batchesAtRisk.set(r?.at_risk ?? 0);
    for (const batchId of r?.raised ?? []) {
      this.d.log.info('batch raised: it would miss its deadline at its current rate', { batchId });
    }
  }

  /**
   * Removes expired and deleted data (src/db/purge.ts) in small transactions, paced
   * (DAEMON_PURGE_PACE) so that dispatch on the same machine keeps its rate; when another daemon is
   * purging, this one skips its turn.
   */
  private async purge(): Promise<void> {
    const c = this.d.config;
    const retention = c.finishedBatchRetention;
    const report = await purge(this.d.db, this.d.schema, {
      ...(retention !== undefined ? { olderThanMs: parseDuration(retention) } : {}),
      whenBusy: 'skip',
      pace: DAEMON_PURGE_PACE,
      statementTimeoutMs: c.dbTimeoutMs,
      shouldStop: () => this.stopped || this.d.isStopping,
    });
    if (report.batches + report.requests + report.outputFiles + report.inputFiles > 0) {
      this.d.log.info(`purge ${describePurge(report)}`, { ...report });
    }
  }

  /** Compresses the answers of ended batches (src/db/compress.ts); skips its turn when another daemon is at it. */
  private async compress(): Promise<void> {
    const c = this.d.config;
    const report = await compressFinished(this.d.db, this.d.schema, {
      afterMs: c.compressAfterMs,
      whenBusy: 'skip',
      pace: DAEMON_COMPRESS_PACE,
      statementTimeoutMs: c.dbTimeoutMs,
      shouldStop: () => this.stopped || this.d.isStopping,
    });
    if (report.answers > 0) this.d.log.info(`compress ${describeCompress(report)}`, { ...report });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled([...this.running]);
  }
}
