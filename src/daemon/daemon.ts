import { createHash, randomUUID } from 'node:crypto';
import os from 'node:os';
import type pg from 'pg';
import type { DaemonHandle, PostgresRequestManager } from '../store/request-manager.js';
import { eventsChannel } from '../store/schema.js';
import { claimSql, configureModelLimitsSql, liveModelsSql, lockModelsSql } from '../store/sql/claim.js';
import { completeSql } from '../store/sql/complete.js';
import { completeAndClaimSql } from '../store/sql/complete-and-claim.js';
import { registerDaemonSql, stopDaemonSql } from '../store/sql/heartbeat.js';
import { type DaemonConfig, leaseMs } from './config.js';
import { isConnectionError, query, withClient } from './db.js';
import { type ClaimedRow, Dispatcher } from './dispatcher.js';
import { ClaimBatchLimiter, type Limiter } from './limiter.js';
import { EventListener } from './listener.js';
import { type DaemonLog, daemonLog, errorFields, stderrLogger } from './logger.js';
import { Maintenance } from './maintenance.js';
import { createDaemonMetrics, type DaemonMetrics } from './metrics.js';
import { Semaphore } from './semaphore.js';
import type { ResultWrite } from './settle.js';
import { UndiciUpstreamClient, type UpstreamClient } from './upstream-client.js';

/** Most row writes one flush carries (one statement). */
const MAX_FLUSH = 2000;
/** Cycles in progress at once (see loop()). */
const PIPELINE_DEPTH = 2;

/**
 * Named (server-side prepared) statements for the hot path: parsing and planning the claim took
 * longer than executing it (1.2 ms planning against 0.9 ms execution, measured).
 */
function preparedName(kind: string, schema: string): string {
  return `fus_${kind}_${createHash('sha1').update(schema).digest('hex').slice(0, 12)}`;
}

/** Starts a daemon on the manager's database; resolves once it is registered and listening. */
export async function startDaemon(
  manager: PostgresRequestManager,
  config: DaemonConfig,
): Promise<DaemonHandle> {
  const daemon = new Daemon(manager, config);
  await daemon.start();
  return daemon.handle;
}

/**
 * The daemon: one serial loop that, per cycle, writes the outcomes gathered since the last cycle and
 * claims as many rows as the global limits allow, in one transaction; a dispatcher that sends them;
 * periodic maintenance (heartbeat, reclaim, cancel checks, finalize sweeps).
 *
 * The loop never sleeps while work is possible (lesson 14): every finished attempt frees a slot and
 * wakes it; it sleeps only when nothing is to be written and the last claim found nothing, until a
 * notification, the poll interval, the next due retry or a finished attempt.
 */
export class Daemon {
  readonly id = randomUUID();
  readonly log: DaemonLog;
  readonly metrics: DaemonMetrics;
  readonly writers: Semaphore;
  readonly handle: DaemonHandle;
  private readonly s: string;
  private readonly pool: pg.Pool;
  private readonly upstream: UpstreamClient;
  private readonly limiter: Limiter;
  readonly dispatcher: Dispatcher;
  private readonly listener: EventListener;
  private readonly maintenance: Maintenance;
  private results: ResultWrite[] = [];
  private claimNeeded = true;
  private seedNeeded = true;
  /** Models with live work as of the last refresh (each poll and notification). */
  private liveModels: string[] = [];
  private stopping = false;
  private stopDeadline = Number.POSITIVE_INFINITY;
  private wakeUp: (() => void) | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private nextRetryAt = Number.POSITIVE_INFINITY;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly cycles = new Set<Promise<void>>();
  /** Result writes a running cycle is carrying (still ours until written). */
  private readonly writing = new Set<ResultWrite[]>();
  private backoff = 0;
  private backoffUntil = 0;
  private stopPromise: Promise<void> | null = null;
  private resolveDone!: () => void;
  private readonly poolErrorHandler = (err: Error) =>
    this.log.warn('idle database connection failed', errorFields(err));
  private readonly signalHandler = () => void this.stop();

  constructor(
    manager: PostgresRequestManager,
    readonly config: DaemonConfig,
  ) {
    this.s = manager.schema;
    this.pool = manager.pool;
    this.log = daemonLog(config.logger ?? stderrLogger('info'), { component: 'daemon', daemonId: this.id });
    this.metrics = createDaemonMetrics(config.metricsRegistry);
    this.writers = new Semaphore(Math.max(1, config.maxDbWriters));
    this.upstream = config.upstreamClient ?? new UndiciUpstreamClient(config.requestTimeoutMs);
    this.limiter = config.limiter ?? new ClaimBatchLimiter(config.claimBatchSize);
    this.dispatcher = new Dispatcher({
      daemonId: this.id,
      upstream: this.upstream,
      router: config.upstreamRouter,
      limiter: this.limiter,
      policy: config,
      requestTimeoutMs: config.requestTimeoutMs,
      metrics: this.metrics,
      log: this.log,
      onResult: (write) => {
        this.results.push(write);
        this.claimNeeded = true;
        this.wake();
      },
    });
    this.listener = new EventListener(
      this.pool.options as pg.ClientConfig,
      eventsChannel(manager.schemaName),
      (event) => {
        if (event.type === 'batch_cancelled') {
          const n = this.dispatcher.abortBatches([event.batchId], 'cancelled');
          if (n > 0)
            this.log.info('batch cancelled: aborting in-flight requests', { batchId: event.batchId, n });
        } else {
          this.seedNeeded = true;
          this.claimNeeded = true;
          this.wake();
        }
      },
      () => this.poke(),
      this.log,
    );
    this.maintenance = new Maintenance(this);
    const done = new Promise<void>((resolve) => {
      this.resolveDone = resolve;
    });
    this.handle = { id: this.id, stop: () => this.stop(), done };
  }

  get schema(): string {
    return this.s;
  }

  get db(): pg.Pool {
    return this.pool;
  }

  /** Asks for a claim (and model seeding) on the next cycle: poll tick, reconnect, reclaim. */
  poke(): void {
    this.seedNeeded = true;
    this.claimNeeded = true;
    this.wake();
  }

  async start(): Promise<void> {
    this.pool.on('error', this.poolErrorHandler);
    const t = this.config.dbTimeoutMs;
    // Plain settings only: the router may hold API keys, the hooks are objects.
    const safeConfig = {
      ...this.config,
      upstreamRouter: undefined,
      metricsRegistry: undefined,
      logger: undefined,
      upstreamClient: undefined,
      limiter: undefined,
    };
    await query(this.pool, t, 'register daemon', registerDaemonSql(this.s), [
      this.id,
      os.hostname(),
      process.pid,
      process.env.npm_package_version ?? null,
      JSON.stringify(safeConfig),
    ]);
    const limits = Object.entries(this.config.modelConcurrencyLimits);
    if (limits.length > 0) {
      await query(this.pool, t, 'configure model limits', configureModelLimitsSql(this.s), [
        limits.map(([m]) => m),
        limits.map(([, n]) => n),
      ]);
    }
    await this.listener.start();
    if (this.config.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    this.maintenance.start();
    this.loopDone = this.loop();
    this.log.info('daemon started', { schema: this.s, pid: process.pid });
  }

  private wake(): void {
    const w = this.wakeUp;
    if (w) {
      this.wakeUp = null;
      w();
    }
  }

  /** Sleeps until woken, the poll interval, or the next due retry. */
  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wakeUp = resolve;
      const until = Math.min(ms, Math.max(0, this.nextRetryAt - Date.now()));
      this.wakeTimer = setTimeout(() => {
        if (this.nextRetryAt <= Date.now()) {
          this.nextRetryAt = Number.POSITIVE_INFINITY;
          this.claimNeeded = true;
        }
        this.wake();
      }, until);
    }).finally(() => {
      if (this.wakeTimer) clearTimeout(this.wakeTimer);
      this.wakeTimer = null;
    });
  }

  /**
   * Starts cycles while there is work, up to PIPELINE_DEPTH at once: a second cycle sends its
   * BEGIN + lock while the first is still on the wire and takes the model locks the moment the
   * first commits, hiding a round trip per cycle. The locks keep the limit exact either way.
   */
  private async loop(): Promise<void> {
    const depth = Math.max(1, Math.min(PIPELINE_DEPTH, this.config.maxDbWriters));
    for (;;) {
      if (this.stopping) {
        const drained = this.dispatcher.size === 0 && this.results.length === 0 && this.cycles.size === 0;
        if (drained || Date.now() > this.stopDeadline) break;
      }
      const claim = this.claimNeeded && !this.stopping;
      const backingOff = Date.now() < this.backoffUntil;
      if ((!claim && this.results.length === 0) || this.cycles.size >= depth || backingOff) {
        await this.sleep(backingOff ? this.backoffUntil - Date.now() : this.config.pollIntervalMs);
        continue;
      }
      this.claimNeeded = false;
      const batch = this.results.splice(0, MAX_FLUSH);
      const run = this.runCycle(batch, claim).finally(() => {
        this.cycles.delete(run);
        this.wake();
      });
      this.cycles.add(run);
      // Let a just-started cycle take its connection before deciding on another.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await Promise.allSettled([...this.cycles]);
  }

  private async runCycle(batch: ResultWrite[], claim: boolean): Promise<void> {
    this.writing.add(batch);
    try {
      if (claim && this.seedNeeded) {
        const { rows } = await query<{ model: string }>(
          this.pool,
          this.config.dbTimeoutMs,
          'live models',
          liveModelsSql(this.s),
          [JSON.stringify(this.config.modelConcurrencyLimits), this.config.defaultModelConcurrency],
        );
        this.liveModels = rows.map((r) => r.model);
        this.seedNeeded = false;
      }
      await this.cycle(batch, claim);
      this.backoff = 0;
    } catch (err) {
      this.results.unshift(...batch);
      if (claim) this.claimNeeded = true;
      this.backoff = Math.min(5000, Math.max(100, this.backoff * 2));
      this.backoffUntil = Date.now() + this.backoff * (0.5 + Math.random() / 2);
      this.log.warn('claim/write cycle failed; backing off', {
        ...errorFields(err),
        backoffMs: this.backoff,
      });
      if (isConnectionError(err) || (err as Error).name === 'QueryTimeoutError') {
        this.maintenance.reclaimOrphansSoon();
      }
    } finally {
      this.writing.delete(batch);
    }
  }

  /** One transaction: lock the limits of models with work, write outcomes, claim. */
  private async cycle(writes: ResultWrite[], claim: boolean): Promise<void> {
    const started = process.hrtime.bigint();
    const { applied, claimed } = await withClient(
      this.pool,
      this.config.dbTimeoutMs,
      'claim cycle',
      async (c) => {
        let applied: { id: string; batch_id: string }[] = [];
        let claimed: ClaimedRow[] = [];
        if (!claim || this.liveModels.length === 0) {
          if (writes.length === 0) return { applied, claimed };
          applied = (await c.query(this.completeQuery(writes))).rows;
          return { applied, claimed };
        }
        try {
          const results = (await c.query(
            // idle_in_transaction_session_timeout: a daemon frozen mid-transaction (SIGSTOP, a VM or GC
            // pause) cannot run its own deadlines; PostgreSQL then ends its session and frees the model
            // locks, or every daemon would wait on that model until it woke up.
            `BEGIN; SET LOCAL statement_timeout = ${Math.max(1, this.config.dbTimeoutMs)};
             SET LOCAL idle_in_transaction_session_timeout = ${Math.max(1, this.config.dbTimeoutMs)};${this.config.synchronousCommit ? '' : ' SET LOCAL synchronous_commit = off;'} ${lockModelsSql(
               this.s,
               `ARRAY[${this.liveModels.map((m) => c.escapeLiteral(m)).join(',')}]`,
             )}`,
          )) as unknown as pg.QueryResult<{ model: string; concurrency: number }>[];
          const limits = results[results.length - 1]!.rows;
          const models: string[] = [];
          const wants: number[] = [];
          for (const { model, concurrency } of limits) {
            this.metrics.limit.set({ model }, concurrency);
            const want = this.limiter.want(model, this.dispatcher.modelInFlight(model));
            if (want > 0) {
              models.push(model);
              wants.push(want);
            }
          }
          if (writes.length > 0) {
            // Writes and claim in one statement (the claim counts the slots the writes free).
            const { rows } = await c.query<ClaimedRow & { kind: 'claimed' | 'done' }>({
              name: preparedName('cycle', this.s),
              text: completeAndClaimSql(this.s),
              values: [...this.completeParams(writes), models, wants, leaseMs(this.config)],
            });
            for (const row of rows) {
              if (row.kind === 'done') applied.push(row);
              else claimed.push(row);
            }
          } else if (models.length > 0) {
            claimed = (
              await c.query<ClaimedRow>({
                name: preparedName('claim', this.s),
                text: claimSql(this.s),
                values: [models, wants, this.id, leaseMs(this.config)],
              })
            ).rows;
          }
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => {});
          throw err;
        }
        return { applied, claimed };
      },
    );
    if (claim)
      this.metrics.claimDuration.observe(
        { daemon: this.id },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
    // Dispatch first: a batch with freshly claimed rows is not a candidate for finalize.
    for (const row of claimed) this.dispatcher.dispatch(row);
    this.afterWrite(writes, applied);
    // A claim that found work may find more (rows beyond the cap, other models): try again soon.
    if (claimed.length > 0) this.claimNeeded = true;
  }

  private completeQuery(writes: ResultWrite[]): pg.QueryConfig {
    return {
      name: preparedName('complete', this.s),
      text: completeSql(this.s),
      values: this.completeParams(writes),
    };
  }

  private completeParams(writes: ResultWrite[]): unknown[] {
    return [
      this.id,
      writes.map((w) => w.id),
      writes.map((w) => w.attempt),
      writes.map((w) => w.state),
      writes.map((w) => w.notBefore),
      writes.map((w) => w.status),
      writes.map((w) => w.body),
      writes.map((w) => w.upstreamId),
      writes.map((w) => w.errorCode),
      writes.map((w) => w.errorMessage),
      writes.map((w) => w.inputTokens),
      writes.map((w) => w.outputTokens),
      writes.map((w) => w.totalTokens),
      writes.map((w) => w.giveBack),
    ];
  }

  /** Metrics, stale-write accounting, retry wake-ups and finalize for batches that may have ended. */
  private afterWrite(writes: ResultWrite[], applied: { id: string; batch_id: string }[]): void {
    if (writes.length === 0) return;
    const ok = new Set(applied.map((a) => a.id));
    const toFinalize = new Set<string>();
    for (const w of writes) {
      if (!ok.has(w.id)) {
        this.metrics.staleWrites.inc({ daemon: this.id });
        this.log.info('stale write refused: the request moved on', { requestId: w.id, state: w.state });
        continue;
      }
      if (w.state === 'completed') this.metrics.completed.inc({ model: w.model });
      else if (w.state === 'failed')
        this.metrics.failed.inc({ model: w.model, reason: w.reason ?? 'unknown' });
      if (w.state === 'pending') {
        const due = w.notBefore?.getTime() ?? Date.now();
        if (due < this.nextRetryAt) this.nextRetryAt = due;
      } else if (this.dispatcher.batchInFlight(w.batchId) === 0) {
        toFinalize.add(w.batchId);
      }
    }
    for (const batchId of toFinalize) this.maintenance.finalizeSoon(batchId);
  }

  /** Ids this daemon holds (in flight or awaiting their write), for the orphan reclaim. */
  heldIds(): string[] {
    const writing = [...this.writing].flatMap((batch) => batch.map((w) => w.id));
    return [...this.dispatcher.ids(), ...this.results.map((w) => w.id), ...writing];
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  stop(): Promise<void> {
    if (this.stopPromise) return this.stopPromise;
    this.stopPromise = this.shutdown();
    return this.stopPromise;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.log.info('daemon stopping', { inFlight: this.dispatcher.size });
    process.off('SIGTERM', this.signalHandler);
    process.off('SIGINT', this.signalHandler);
    this.wake();
    const grace = this.config.shutdownGraceMs;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.dispatcher.idle(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, grace);
      }),
    ]);
    clearTimeout(timer);
    // What is still in flight goes back to pending (guarded writes), not lost and not failed.
    this.dispatcher.abortAll('shutdown');
    await this.dispatcher.idle();
    this.stopDeadline = Date.now() + Math.max(2000, this.config.dbTimeoutMs);
    this.wake();
    await this.loopDone;
    await this.maintenance.stop();
    await this.listener.stop();
    await this.upstream.close();
    if (this.results.length > 0) {
      this.log.warn('stopped with unwritten results; their rows will be reclaimed', {
        n: this.results.length,
      });
    }
    await query(this.pool, this.config.dbTimeoutMs, 'mark daemon stopped', stopDaemonSql(this.s), [
      this.id,
    ]).catch((err) => this.log.warn('could not mark the daemon stopped', errorFields(err)));
    this.pool.off('error', this.poolErrorHandler);
    this.log.info('daemon stopped');
    this.resolveDone();
  }
}
