import { createHash, randomUUID } from 'node:crypto';
import os from 'node:os';
import type pg from 'pg';
import { query } from '../db/client.js';
import { eventsChannel } from '../db/schema.js';
import { lockLimitsSql, rebalanceSql } from '../db/sql/queue/budget.js';
import { claimSql, configureModelLimitsSql, defaultModelLimitsSql } from '../db/sql/queue/claim.js';
import { completeSql } from '../db/sql/queue/complete.js';
import { registerDaemonSql, stopDaemonSql } from '../db/sql/queue/heartbeat.js';
import { type DaemonConfig, sessionConnection } from '../dispatch/config.js';
import type { DaemonDatabase, DaemonHandle, Limiter, UpstreamClient } from '../dispatch/interfaces.js';
import { type DaemonLog, daemonLog, errorFields, stderrLogger } from '../dispatch/logger.js';
import { parseKeyEncryptionKey } from '../domain/key-encryption.js';
import { resolveRetryableStatuses } from '../domain/retry.js';
import { VERSION } from '../version.js';
import { DaemonBudgets } from './budgets.js';
import { Dispatcher } from './dispatcher.js';
import type { Hooks } from './ledger.js';
import { ClaimBatchLimiter } from './limiter.js';
import { EventListener } from './listener.js';
import { newLivenessKey } from './liveness.js';
import { Maintenance } from './maintenance.js';
import { createDaemonMetrics, type DaemonMetrics, metricsModelsOf } from './metrics.js';
import { DispatchPipe } from './pipe.js';
import { DaemonRateLimits } from './rate-limits.js';
import { Semaphore } from './semaphore.js';
import type { ResultWrite } from './settle.js';
import { TemplateKeys } from './template-keys.js';
import { UndiciUpstreamClient } from './upstream-client.js';
import { DaemonUpstreams } from './upstreams.js';

/**
 * Named (server-side prepared) statements for the hot path: parsing and planning the claim took
 * longer than executing it (1.2 ms planning against 0.9 ms execution, measured).
 */
function preparedName(kind: string, schema: string): string {
  return `fus_${kind}_${createHash('sha1').update(schema).digest('hex').slice(0, 12)}`;
}

/** Starts a daemon on a database; resolves once it is registered and listening. */
export async function startDaemon(manager: DaemonDatabase, config: DaemonConfig): Promise<DaemonHandle> {
  const daemon = new Daemon(manager, config);
  await daemon.start();
  return daemon.handle;
}

/**
 * The daemon: the shell that wires its parts together and runs its life (start, stop). Event
 * driven; nothing sleeps while work is possible (lesson 14):
 *
 *   budgets   budgets.ts: the seed of live (model, route) pairs and this daemon's share of each
 *             model's global limit, one short transaction at a time.
 *   pipe      pipe.ts: claims ahead of need into the slot ledger's queue (ledger.ts), sends queued
 *             rows the moment a slot is free, writes outcomes and hand-backs in batches, as the flush
 *             scheduler (flush-scheduler.ts) decides.
 *   dispatch  dispatcher.ts: sends each row; a finished attempt frees its slot at once (the upstream
 *             no longer holds it) and hands its row write to the pipe.
 *   maintain  maintenance.ts: heartbeat, liveness probes, poll (pokes: seed + budgets + claim),
 *             reclaim of dead daemons (their budgets too) and expired leases, cancel checks, finalize.
 *
 * A model whose claim came back short is idle until a poke (poll interval, batch notification,
 * reclaim, a retry falling due); an idle model's unused slots go back at the next rebalance.
 */
export class Daemon {
  readonly id = randomUUID();
  readonly log: DaemonLog;
  readonly metrics: DaemonMetrics;
  readonly writers: Semaphore;
  readonly handle: DaemonHandle;
  readonly upstreams: DaemonUpstreams;
  readonly dispatcher: Dispatcher;
  readonly pipe: DispatchPipe;
  readonly budgets: DaemonBudgets;
  /** Requests/tokens-per-minute limits per model (src/daemon/rate-limits.ts). */
  readonly rates: DaemonRateLimits;
  readonly maintenance: Maintenance;
  /** Hot-path statements, built once: name (server-side prepared) and text. */
  readonly sql: Record<'lock' | 'budget' | 'claim' | 'complete', { name?: string; text: string }>;
  private readonly s: string;
  private readonly pool: pg.Pool;
  private readonly upstream: UpstreamClient;
  private readonly limiter: Limiter;
  private readonly listener: EventListener;
  /** This daemon's liveness lock key (src/store/sql/liveness.ts), held on the listener's session. */
  private readonly livenessKey = newLivenessKey();
  private stopping = false;
  /**
   * start() has registered this daemon and written its limits. Pokes before then are dropped (start()
   * pokes once done): the listener runs first, and a batch notice arriving meanwhile must not
   * rebalance against limits this daemon has not written yet (a stored default of 16 sent 16 at once
   * before `--default-limit 4` applied; test/cli/run.test.ts).
   */
  private started = false;
  private nextRetryAt = Number.POSITIVE_INFINITY;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly limiterWarnedAt = new Map<string, number>();
  private stopPromise: Promise<void> | null = null;
  private resolveDone!: () => void;
  private readonly poolErrorHandler = (err: Error) =>
    this.log.warn('idle database connection failed', errorFields(err));
  private readonly signalHandler = () => void this.stop();

  constructor(
    manager: DaemonDatabase,
    readonly config: DaemonConfig,
  ) {
    this.s = manager.schema;
    this.pool = manager.pool;
    this.log = daemonLog(config.logger ?? stderrLogger('info'), { component: 'daemon', daemonId: this.id });
    this.metrics = createDaemonMetrics(config.metricsRegistry, metricsModelsOf(config));
    this.writers = new Semaphore(Math.max(1, config.maxDbWriters));
    // Through a transaction pooler (directConnection given), statements stay unnamed: a name
    // prepared on one server connection is unknown (or taken) on the next.
    const named = (kind: string, text: string) =>
      config.directConnection === undefined ? { name: preparedName(kind, this.s), text } : { text };
    this.sql = {
      lock: named('lock', lockLimitsSql(this.s)),
      budget: named('budget', rebalanceSql(this.s)),
      claim: named('claim', claimSql(this.s)),
      complete: named('complete', completeSql(this.s)),
    };
    this.upstream =
      config.upstreamClient ?? new UndiciUpstreamClient(config.requestTimeoutMs, config.maxResponseBytes);
    this.limiter = config.limiter ?? new ClaimBatchLimiter(config.claimBatchSize);
    const kek = config.keyEncryptionKey ? parseKeyEncryptionKey(config.keyEncryptionKey) : null;
    this.upstreams = new DaemonUpstreams(config.upstreamRouter, kek ? [kek.id] : []);
    this.rates = new DaemonRateLimits(
      this.s,
      {
        modelRateLimits: { ...config.modelRateLimits },
        defaultMaxOutputTokens: config.defaultMaxOutputTokens,
        rateBurstSeconds: config.rateBurstSeconds,
        learnRateLimits: config.learnRateLimits,
      },
      (what, err) => this.log.warn(`${what} failed`, errorFields(err)),
    );
    this.pipe = new DispatchPipe(this, this.ledgerHooks());
    this.budgets = new DaemonBudgets(this);
    this.dispatcher = new Dispatcher({
      rates: this.rates,
      // A 429 paused the model: every daemon stops starting it until the upstream's hint.
      onPause: (model, ms) => void this.rates.pause(this.pool, model, ms),
      daemonId: this.id,
      upstream: this.upstream,
      upstreams: this.upstreams,
      keys: new TemplateKeys(kek),
      limiter: this.limiter,
      policy: {
        maxRetries: config.maxRetries,
        backoffMs: config.backoffMs,
        backoffFactor: config.backoffFactor,
        maxBackoffMs: config.maxBackoffMs,
        retryableStatuses: resolveRetryableStatuses(config.retryableStatuses),
        shouldRetry: config.shouldRetry,
      },
      requestTimeoutMs: config.requestTimeoutMs,
      metrics: this.metrics,
      log: this.log,
      onResult: (write, latencyMs) => this.pipe.onResult(write, latencyMs),
    });
    this.listener = new EventListener(
      sessionConnection(config, this.pool),
      eventsChannel(manager.schemaName),
      (event) => {
        if (event.type === 'batch_cancelled') {
          const n = this.abortBatches([event.batchId], 'cancelled');
          if (n > 0) this.log.info('batch cancelled: aborting its requests', { batchId: event.batchId, n });
        } else {
          this.poke();
        }
      },
      () => this.poke(),
      this.log,
      {
        key: this.livenessKey,
        onChange: (held) => {
          if (!held) this.maintenance.livenessLost();
        },
      },
    );
    this.maintenance = new Maintenance(this);
    const done = new Promise<void>((resolve) => {
      this.resolveDone = resolve;
    });
    this.handle = { id: this.id, stop: () => this.stop(), done };
  }

  /**
   * The ledger's plug points: the limiter's appetite (a throwing limiter claims nothing) and the
   * rate limits (a claim takes what the model's wallet admits, queued rows wait out a pause,
   * adaptive concurrency caps the share).
   */
  private ledgerHooks(): Hooks {
    return {
      want: (model, inFlight) => this.limiterWant(model, inFlight),
      admissible: (model, now) => this.rates.admissible(model, now),
      sendable: (model, now) => this.rates.sendable(model, now),
      concurrencyCap: (model) => this.rates.concurrencyCap(model),
    };
  }

  get schema(): string {
    return this.s;
  }

  get db(): pg.Pool {
    return this.pool;
  }

  /** Whether this daemon's session holds its liveness lock now. */
  get holdsLivenessLock(): boolean {
    return this.listener.holdsLock;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /**
   * There may be new work (poll tick, notification, reconnect, reclaim, a retry falling due):
   * refresh the models with live work, rebalance, claim.
   */
  poke(): void {
    if (this.stopping || !this.started) return;
    this.budgets.poke();
  }

  /**
   * Batches cancelled or past their deadline: their in-flight requests are aborted and their queued
   * rows handed back. Returns how many rows that touched.
   */
  abortBatches(batchIds: string[], reason: 'cancelled' | 'expired'): number {
    return this.dispatcher.abortBatches(batchIds, reason) + this.pipe.release(batchIds);
  }

  /**
   * This daemon was declared lost while it was alive (its heartbeat found its row marked stopped, or
   * older than deadDaemonAfterMs): another daemon's reclaim has handed its rows to others and deleted
   * its budgets, so its slots may already be in other daemons' rooms. Its attempts still open would
   * go on at the upstream beside theirs, above the model's limit, and their writes will be refused
   * (complete.ts guards): they are aborted now, its queued rows handed back (refused too where the
   * rows moved on), and it sends nothing until a rebalance grants it slots again. `why` and
   * `fields` say how it learnt so, in the warning logged.
   */
  fenceAfterLost(why: string, fields: Record<string, unknown> = {}): void {
    if (this.stopping) return;
    this.pipe.ledger.forgetBudgets();
    const inFlight = this.dispatcher.size;
    this.dispatcher.abortAll('shutdown');
    const queued = this.pipe.releaseAll();
    this.poke();
    this.log.warn(
      `this daemon had been declared lost (${why}): its attempts in flight are aborted and its queue handed back`,
      { ...fields, inFlight, queued },
    );
  }

  /** Runs `fn` while no claim runs (the orphan reclaim). */
  withoutClaims<T>(fn: () => Promise<T>): Promise<T> {
    return this.pipe.withoutClaims(fn);
  }

  /** Batches this daemon holds rows of (in flight or queued), for the cancel check. */
  heldBatchIds(): string[] {
    return [...new Set([...this.dispatcher.batchIds(), ...this.pipe.queuedBatchIds()])];
  }

  /** Ids this daemon holds (in flight, queued or awaiting their write), for the orphan reclaim. */
  heldIds(): string[] {
    return [...this.dispatcher.ids(), ...this.pipe.heldIds()];
  }

  private limiterWant(model: string, inFlight: number): number {
    try {
      const n = Math.floor(this.limiter.want(model, inFlight));
      return Number.isFinite(n) ? Math.max(0, n) : 0;
    } catch (err) {
      const last = this.limiterWarnedAt.get(model) ?? 0;
      if (Date.now() - last > 10_000) {
        this.limiterWarnedAt.set(model, Date.now());
        this.log.warn('limiter.want threw; claiming nothing of the model', { model, ...errorFields(err) });
      }
      return 0;
    }
  }

  async start(): Promise<void> {
    this.pool.on('error', this.poolErrorHandler);
    const t = this.config.dbTimeoutMs;
    // Plain settings only: the router may hold API keys, the hooks are objects, the secret is secret.
    const safeConfig = {
      ...this.config,
      keyEncryptionKey: undefined,
      upstreamRouter: undefined,
      metricsRegistry: undefined,
      logger: undefined,
      upstreamClient: undefined,
      limiter: undefined,
    };
    // The session (liveness lock, LISTEN) first: registered with its key, this daemon is alive to the
    // others by its lock. Should the session not connect now, it keeps trying, and the heartbeat
    // stands in meanwhile.
    await this.listener.start();
    try {
      await query(this.pool, t, 'register daemon', registerDaemonSql(this.s), [
        this.id,
        os.hostname(),
        process.pid,
        VERSION,
        JSON.stringify(safeConfig),
        this.livenessKey,
      ]);
      await this.budgets.publishRoutes([]);
      const limits = Object.entries(this.config.modelConcurrencyLimits);
      if (limits.length > 0) {
        await query(this.pool, t, 'configure model limits', configureModelLimitsSql(this.s), [
          limits.map(([m]) => m),
          limits.map(([, n]) => n),
        ]);
      }
      await query(this.pool, t, 'apply the default limit', defaultModelLimitsSql(this.s), [
        this.config.defaultModelConcurrency,
      ]);
      await this.rates.configure(this.pool);
    } catch (err) {
      await this.listener.stop();
      throw err;
    }
    if (this.config.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    // The first claim's seed before maintenance's first round (sweep, reclaim, queue depth): its
    // timer fires first, so it takes the pool's first connection and the work starts sooner.
    this.started = true;
    this.poke();
    this.maintenance.start();
    this.log.info('daemon started', { schema: this.s, pid: process.pid });
  }

  /** Metrics, stale-write accounting, retry wake-ups and finalize for batches that may have ended. */
  afterWrite(writes: ResultWrite[], stale: Set<string>): void {
    if (writes.length === 0) return;
    const toFinalize = new Set<string>();
    const ended = this.config.onRequestEnded;
    for (const w of writes) {
      if (stale.has(w.id)) {
        this.metrics.staleWrites.inc({ daemon: this.id });
        this.log.info('stale write refused: the request moved on', { requestId: w.id, state: w.state });
        continue;
      }
      if (ended !== undefined && w.state !== 'pending') this.tellEnded(ended, w.batchId, w.state);
      if (w.state === 'completed') this.metrics.completed.inc({ model: this.metrics.model(w.model) });
      else if (w.state === 'failed')
        this.metrics.failed.inc({ model: this.metrics.model(w.model), reason: w.reason ?? 'unknown' });
      if (w.state === 'pending') this.retryDueAt(w.notBefore?.getTime() ?? Date.now());
      // A retry leaves its batch open; a hand-back (a row never sent: its batch was cancelled or
      // passed its deadline, or this daemon stops) may be the last row of an ended batch here.
      if (
        (w.state !== 'pending' || w.giveBack === true) &&
        this.dispatcher.batchInFlight(w.batchId) === 0 &&
        this.pipe.ledger.mayHaveEnded(w.batchId, w.model)
      ) {
        toFinalize.add(w.batchId);
      }
    }
    for (const batchId of toFinalize) this.maintenance.finalizeSoon(batchId);
  }

  private tellEnded(
    ended: NonNullable<DaemonConfig['onRequestEnded']>,
    batchId: string,
    state: 'completed' | 'failed' | 'canceled',
  ): void {
    try {
      ended(batchId, state);
    } catch (err) {
      this.log.warn('onRequestEnded threw', { batchId, ...errorFields(err) });
    }
  }

  /** A row of ours went back to pending, claimable from `due`: poke then (earliest wins). */
  private retryDueAt(due: number): void {
    if (due >= this.nextRetryAt || this.stopping) return;
    this.nextRetryAt = due;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = null;
        this.nextRetryAt = Number.POSITIVE_INFINITY;
        this.poke();
      },
      Math.min(Math.max(0, due - Date.now()), 2_147_483_647),
    );
  }

  stop(): Promise<void> {
    if (this.stopPromise) return this.stopPromise;
    this.stopPromise = this.shutdown();
    return this.stopPromise;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.log.info('daemon stopping', { inFlight: this.dispatcher.size });
    // No more claims; queued rows go back at once (they were never sent).
    this.pipe.stop();
    process.off('SIGTERM', this.signalHandler);
    process.off('SIGINT', this.signalHandler);
    if (this.retryTimer) clearTimeout(this.retryTimer);
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
    // Write what is left (no claims now), within a deadline.
    await this.pipe.drain(Date.now() + Math.max(2000, this.config.dbTimeoutMs));
    await this.budgets.close();
    await this.maintenance.stop();
    await this.upstream.close();
    if (this.pipe.unwritten > 0) {
      this.log.warn('stopped with unwritten results; their rows will be reclaimed', {
        n: this.pipe.unwritten,
      });
    }
    // Marks the daemon stopped and deletes its budgets: its slots go back to the other daemons.
    await query(this.pool, this.config.dbTimeoutMs, 'mark daemon stopped', stopDaemonSql(this.s), [
      this.id,
    ]).catch((err) => this.log.warn('could not mark the daemon stopped', errorFields(err)));
    // Only now: with the lock released before the row says stopped, others would see a lost daemon.
    await this.listener.stop();
    this.pool.off('error', this.poolErrorHandler);
    this.log.info('daemon stopped');
    this.resolveDone();
  }
}
