import { createHash, randomUUID } from 'node:crypto';
import os from 'node:os';
import type pg from 'pg';
import { isConnectionError, query, withClient } from '../db/client.js';
import { ensureRoutes } from '../db/routes.js';
import { eventsChannel } from '../db/schema.js';
import { lockLimitsSql, rebalanceSql } from '../db/sql/budget.js';
import { claimSql, configureModelLimitsSql, liveRoutesSql } from '../db/sql/claim.js';
import { completeSql } from '../db/sql/complete.js';
import { registerDaemonSql, stopDaemonSql } from '../db/sql/heartbeat.js';
import { publishDaemonRoutesSql } from '../db/sql/routes.js';
import { type DaemonConfig, leaseMs, sessionConnection } from '../dispatch/config.js';
import type { DaemonDatabase, DaemonHandle, Limiter, UpstreamClient } from '../dispatch/interfaces.js';
import { type DaemonLog, daemonLog, errorFields, stderrLogger } from '../dispatch/logger.js';
import { parseKeyEncryptionKey } from '../domain/key-encryption.js';
import { resolveRetryableStatuses } from '../domain/retry.js';
import { isUrlUpstream, type StoredRoute } from '../domain/upstream-route.js';
import { VERSION } from '../version.js';
import { type ClaimedRow, Dispatcher } from './dispatcher.js';
import { ClaimBatchLimiter } from './limiter.js';
import { EventListener } from './listener.js';
import { newLivenessKey } from './liveness.js';
import { Maintenance } from './maintenance.js';
import { createDaemonMetrics, type DaemonMetrics, metricsModelsOf, setRateGauges } from './metrics.js';
import { DaemonRateLimits } from './rate-limits.js';
import { Semaphore } from './semaphore.js';
import type { ResultWrite } from './settle.js';
import { TemplateKeys } from './template-keys.js';
import { UndiciUpstreamClient } from './upstream-client.js';
import { DaemonUpstreams } from './upstreams.js';

/** Most row writes one flush carries (one statement). */
const MAX_FLUSH = 2000;
/**
 * Most response-body characters one write statement carries (at least one write), and the size
 * from which a body goes in a statement of its own, as a text parameter of its own rather than
 * inside the writes' JSON. Four 30 MB answers written together made a 120 MB JSON parameter:
 * JSON.stringify, then pg's byteLength and write of that fresh string, held the event loop ≈ 7 s on
 * a loaded 2-core machine (the API answered 503 meanwhile) and each step copied the bodies again.
 * Alone and as its own parameter, a body is not re-encoded: pg writes the decoded string once.
 */
const MAX_FLUSH_BODY_CHARS = 4 * 1024 * 1024;
const LARGE_BODY_CHARS = 1024 * 1024;
/**
 * Flush statements (claims or writes) in progress at once, each on its own pooled connection
 * (bounded by maxDbWriters); claims take at most 1/depth of the share each. bench/daemon-throughput,
 * alternating runs: depth 2 gave 4.20 / 4.51 s at zero latency (64 in flight) and 2.26 / 2.33 s at
 * 100 ms; depth 3 gave 4.50 / 4.89 s and 2.34 / 2.96 s; 4 measured like 3 and 1 (no overlap of
 * statements and HTTP) was the slowest. Fewer, larger statements: less fixed cost per statement
 * (≈0.6 ms of PostgreSQL's time) and fewer backends competing with this process for the CPU.
 */
const FLUSH_DEPTH = 2;
/**
 * Row writes waiting that start a write statement even while claims run. Measured at zero latency
 * (64 in flight) and at 100 ms (limit 100), claims first with this threshold against statements
 * that wrote and claimed together: 4.75–4.82 s against 4.93–4.94 s, and 2.26–2.28 s against
 * 2.36–2.39 s (same machine, interleaved runs).
 */
const WRITE_BACKLOG = 64;
/** After a finished attempt leaves a daemon above its fair share, give the slot back this soon. */
const GIVE_BACK_DELAY_MS = 10;

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

/** One claim's parameters, per model (parallel arrays; routes as int[] literals). */
interface ClaimPlan {
  models: string[];
  wants: number[];
  held: number[];
  routes: string[];
  /** Unit token cost reserved from each model's rate wallet (rates.reserve; 0 when not limited). */
  units: number[];
}

/** This daemon's share of one model's global limit (model_budgets row, src/db/sql/budget.ts). */
interface ModelBudget {
  /** Slots granted in the database: the hard ceiling of what this daemon holds. */
  slots: number;
  /** Fair share: new requests start only below min(slots, target); above it, slots go back as requests finish. */
  target: number;
  /** The model's global limit as of the last rebalance. */
  limit: number;
  /** Other live daemons with demand for the model (last rebalance). */
  peers: number;
  /** Sum of the caps of this daemon's claims still running (rows that may be about to be in flight). */
  reserved: number;
  /** Claims still running that include the model. */
  claims: number;
  /** Pending rows may be claimable (a claim that came back short clears it; pokes set it). */
  hasWork: boolean;
  /** The model's routes with live work that this daemon can send (the claim takes only these). */
  routes: number[];
}

/**
 * The daemon. State machine (all in this process, event driven; nothing sleeps while work is
 * possible, lesson 14):
 *
 *   budgets   One transaction at a time, rarely (on demand changes, every poll, every budgetIntervalMs
 *             while it holds or wants slots, and soon after a finished attempt when it is above its
 *             fair share): refresh the models with live work if asked (seed), lock their model_limits
 *             rows, recompute this daemon's slots and fair-share target (budget.ts). No claim starts
 *             while it runs; the claims already running are counted in what it keeps.
 *   flush     Triggered by every finished attempt, every claim that came back full and every budget
 *             change (coalesced with setImmediate). Claims first: one autocommit statement claims,
 *             per model, min(limiter want, share / depth, min(slots, target) − held), where held =
 *             requests in flight + caps of claims still running, counted locally. Claimed rows are
 *             'processing' when it commits (durable before the HTTP request leaves), then
 *             dispatched. Outcomes are written by separate autocommit statements (guarded, see
 *             complete.ts) once no claim runs or WRITE_BACKLOG are waiting. Up to FLUSH_DEPTH
 *             statements run at once on separate connections.
 *   dispatch  The dispatcher sends each row; a finished attempt frees its slot at once (the
 *             upstream no longer holds it) and queues its row write for the next flush.
 *   maintain  Timers (maintenance.ts): heartbeat, poll (pokes: seed + budgets + claim), reclaim of
 *             dead daemons (their budgets too) and expired leases, cancel checks, finalize sweeps.
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
  private readonly s: string;
  private readonly pool: pg.Pool;
  private readonly upstream: UpstreamClient;
  private readonly limiter: Limiter;
  readonly upstreams: DaemonUpstreams;
  /** Route ids published in this daemon's row (daemons.route_ids), as a sorted key. */
  private publishedRoutes = '';
  /** The stored routes of upstreams.declared() (which only grows). */
  private declaredRoutes: StoredRoute[] = [];
  readonly dispatcher: Dispatcher;
  /** Requests/tokens-per-minute limits per model (src/daemon/rate-limits.ts). */
  readonly rates: DaemonRateLimits;
  /** Rows claimed per model since the last rebalance: the rate at which it starts them. */
  private readonly startedSinceRebalance = new Map<string, number>();
  private readonly listener: EventListener;
  private readonly maintenance: Maintenance;
  /** This daemon's liveness lock key (src/db/sql/liveness.ts), held on the listener's session. */
  private readonly livenessKey = newLivenessKey();
  private readonly depth: number;
  /** Hot-path statements, built once: name (server-side prepared) and text. */
  private readonly sql: Record<'lock' | 'budget' | 'claim' | 'complete', { name?: string; text: string }>;
  private results: ResultWrite[] = [];
  private readonly budgets = new Map<string, ModelBudget>();
  private seedNeeded = true;
  private stopping = false;
  private stopped = false;
  /** Flush statements running. */
  private readonly flushes = new Set<Promise<void>>();
  private flushQueued = false;
  /** Flush statements running that claim. */
  private claimsRunning = 0;
  /** Result writes a running flush is carrying (still ours until written). */
  private readonly writing = new Set<ResultWrite[]>();
  private backoff = 0;
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | null = null;
  /** The budget task: at most one at a time; claims wait for it. */
  private rebalancing: Promise<void> | null = null;
  private rebalanceAgain = false;
  private rebalanceTimer: NodeJS.Timeout | null = null;
  private rebalanceAt = Number.POSITIVE_INFINITY;
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
    this.depth = Math.max(1, Math.min(FLUSH_DEPTH, config.maxDbWriters));
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
      onResult: (write) => {
        this.results.push(write);
        const b = this.budgets.get(write.model);
        // Above the fair share with others waiting: hand the freed slot over soon.
        if (b && b.peers > 0 && b.slots > b.target) this.requestRebalance(GIVE_BACK_DELAY_MS);
        this.scheduleFlush();
      },
    });
    this.listener = new EventListener(
      sessionConnection(config, this.pool),
      eventsChannel(manager.schemaName),
      (event) => {
        if (event.type === 'batch_cancelled') {
          const n = this.dispatcher.abortBatches([event.batchId], 'cancelled');
          if (n > 0)
            this.log.info('batch cancelled: aborting in-flight requests', { batchId: event.batchId, n });
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

  /**
   * There may be new work (poll tick, notification, reconnect, reclaim, a retry falling due):
   * refresh the models with live work, rebalance, claim.
   */
  poke(): void {
    if (this.stopping) return;
    this.seedNeeded = true;
    this.requestRebalance(0);
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
      await this.publishRoutes([]);
      const limits = Object.entries(this.config.modelConcurrencyLimits);
      if (limits.length > 0) {
        await query(this.pool, t, 'configure model limits', configureModelLimitsSql(this.s), [
          limits.map(([m]) => m),
          limits.map(([, n]) => n),
        ]);
      }
      await this.rates.configure(this.pool);
    } catch (err) {
      await this.listener.stop();
      throw err;
    }
    if (this.config.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    this.maintenance.start();
    this.poke();
    this.log.info('daemon started', { schema: this.s, pid: process.pid });
  }

  /**
   * Records in this daemon's row what it serves: the routes of its configuration plus `seen` (live
   * routes it resolved), and the credentials it sends to any URL upstream (src/db/sql/upstreams.ts
   * reads them). Written at start and whenever the set changes.
   */
  private async publishRoutes(seen: StoredRoute[]): Promise<void> {
    const t = this.config.dbTimeoutMs;
    const specs = this.upstreams.declared();
    if (this.declaredRoutes.length !== specs.length) {
      this.declaredRoutes = await withClient(this.pool, t, 'record routes', (c) =>
        ensureRoutes(c, this.s, specs),
      );
    }
    const declared = this.declaredRoutes;
    const open = new Set<string>(this.upstreams.anyUpstreamCredentials);
    const ids = [
      ...new Set(
        [...declared, ...seen]
          .filter((r) => !(open.has(r.credential) && isUrlUpstream(r.upstream)))
          .map((r) => r.id),
      ),
    ].sort((a, b) => a - b);
    const key = ids.join(',');
    if (key === this.publishedRoutes) return;
    await query(this.pool, t, 'publish routes', publishDaemonRoutesSql(this.s), [this.id, ids, [...open]]);
    this.publishedRoutes = key;
  }

  // ---- budgets -------------------------------------------------------------------------------

  /** Runs the budget task in `delayMs` (sooner requests win; one task at a time). */
  private requestRebalance(delayMs: number): void {
    if (this.stopped) return;
    if (this.rebalancing) {
      if (delayMs === 0) this.rebalanceAgain = true;
      else if (!this.rebalanceTimer || Date.now() + delayMs < this.rebalanceAt) this.armRebalance(delayMs);
      return;
    }
    if (this.rebalanceTimer && Date.now() + delayMs >= this.rebalanceAt) return;
    this.armRebalance(delayMs);
  }

  private armRebalance(delayMs: number): void {
    if (this.rebalanceTimer) clearTimeout(this.rebalanceTimer);
    this.rebalanceAt = Date.now() + delayMs;
    this.rebalanceTimer = setTimeout(() => {
      this.rebalanceTimer = null;
      this.rebalanceAt = Number.POSITIVE_INFINITY;
      this.startRebalance();
    }, delayMs);
  }

  private startRebalance(): void {
    if (this.rebalancing) {
      this.rebalanceAgain = true;
      return;
    }
    const run = this.rebalance()
      .then(
        () => {
          this.backoff = 0;
        },
        (err) => {
          this.log.warn('budget rebalance failed; retrying', errorFields(err));
          if (isConnectionError(err) || (err as Error).name === 'QueryTimeoutError') {
            this.maintenance.reclaimOrphansSoon();
          }
          this.seedNeeded = true;
          this.rebalanceAgain = false;
          this.requestRebalance(Math.min(5000, Math.max(100, this.config.budgetIntervalMs)));
        },
      )
      .finally(() => {
        this.rebalancing = null;
        if (this.rebalanceAgain) {
          this.rebalanceAgain = false;
          this.requestRebalance(0);
        } else if (this.budgets.size > 0) {
          this.requestRebalance(this.config.budgetIntervalMs);
        }
        this.scheduleFlush();
      });
    this.rebalancing = run;
  }

  /** What this daemon holds of a model: requests in flight and the caps of its running claims. */
  private held(model: string, b: ModelBudget): number {
    return this.dispatcher.modelInFlight(model) + b.reserved;
  }

  private limiterWant(model: string, held: number): number {
    try {
      const n = Math.floor(this.limiter.want(model, held));
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

  /** Seeds the live models if asked, then recomputes this daemon's budgets in one short transaction. */
  private async rebalance(): Promise<void> {
    if (this.seedNeeded && !this.stopping) {
      this.seedNeeded = false;
      const { rows } = await query<{ model: string; route_id: number; upstream: string; credential: string }>(
        this.pool,
        this.config.dbTimeoutMs,
        'live routes',
        liveRoutesSql(this.s),
        [JSON.stringify(this.config.modelConcurrencyLimits), this.config.defaultModelConcurrency],
      );
      // Only routes this daemon can send exactly as recorded; the others are left to daemons that can.
      const live = new Map<string, number[]>();
      const served: StoredRoute[] = [];
      for (const r of rows) {
        const route = { id: r.route_id, upstream: r.upstream, credential: r.credential } as StoredRoute;
        if (!this.upstreams.resolve(route, r.model)) continue;
        served.push(route);
        const routes = live.get(r.model);
        if (routes) routes.push(r.route_id);
        else live.set(r.model, [r.route_id]);
      }
      for (const [model, routes] of live) {
        const b = this.budgets.get(model);
        if (b) {
          b.hasWork = true;
          b.routes = routes;
        } else
          this.budgets.set(model, {
            slots: 0,
            target: 0,
            limit: 0,
            peers: 0,
            reserved: 0,
            claims: 0,
            hasWork: true,
            routes,
          });
      }
      for (const [model, b] of this.budgets) {
        if (!live.has(model)) {
          b.hasWork = false;
          b.routes = [];
        }
      }
      await this.publishRoutes(served);
    }
    if (this.budgets.size === 0) return;
    const models: string[] = [];
    const wanted: number[] = [];
    const used: number[] = [];
    for (const [model, b] of this.budgets) {
      const held = this.held(model, b);
      const adaptive = this.rates.concurrencyCap(model) - held;
      const more =
        b.hasWork && !this.stopping ? Math.max(0, Math.min(this.limiterWant(model, held), adaptive)) : 0;
      models.push(model);
      used.push(held);
      wanted.push(held + more);
    }
    // Limits newly learned from the upstream's headers, before the transaction (rare).
    await this.rates.writeLearned(this.pool);
    const t = Math.max(1, this.config.dbTimeoutMs);
    let leased = false;
    const rows = await withClient(this.pool, this.config.dbTimeoutMs, 'budget rebalance', async (c) => {
      try {
        // idle_in_transaction_session_timeout: a daemon frozen inside this transaction (SIGSTOP, a VM
        // or GC pause) cannot run its own deadlines; PostgreSQL then ends its session and frees the
        // model locks, or every other daemon's rebalance would wait on that model until it woke up.
        await c.query(
          `BEGIN; SET LOCAL statement_timeout = ${t}; SET LOCAL idle_in_transaction_session_timeout = ${t}`,
        );
        await c.query({ ...this.sql.lock, values: [models] });
        const { rows } = await c.query<{
          model: string;
          slots: number;
          target: number;
          lim: number;
          peers: number;
        }>({
          ...this.sql.budget,
          values: [this.id, models, wanted, used, this.config.deadDaemonAfterMs],
        });
        // The rate budgets of the same models, under the same locks (rate-budget.ts).
        await this.rates.lease(
          c,
          models,
          this.rateDemand(rows),
          new Map(rows.map((r) => [r.model, r.peers])),
        );
        leased = true;
        await this.rates.publish(c, this.id);
        await c.query('COMMIT');
        return rows;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        if (leased) this.rates.forgetGrants(models);
        throw err;
      }
    });
    this.startedSinceRebalance.clear();
    const seen = new Set<string>();
    for (const r of rows) {
      const b = this.budgets.get(r.model);
      if (!b) continue;
      seen.add(r.model);
      b.slots = r.slots;
      b.target = r.target;
      b.limit = r.lim;
      b.peers = r.peers;
      if (this.metrics.names(r.model)) this.metrics.limit.set({ model: r.model }, r.lim);
      this.rates.setConcurrencyLimit(r.model, r.lim);
    }
    // Gauges name configured models only (metricsModels): a tenant's model name stays out of /metrics.
    setRateGauges(
      this.metrics,
      this.id,
      this.rates.status().filter((r) => this.metrics.names(r.model)),
    );
    for (const [model, b] of this.budgets) {
      // No model_limits row (cannot happen after the seed) means no slots.
      if (!seen.has(model)) {
        b.slots = 0;
        b.target = 0;
      }
      if (b.slots === 0 && !b.hasWork && this.held(model, b) === 0) this.budgets.delete(model);
    }
  }

  /**
   * Rows of each model this daemon may start until its next rebalance, asked of the rate budgets:
   * its share of the slots, or twice what it started since the last rebalance when that is more (a
   * fast upstream turns each slot over many times an interval). Nothing for a model without work.
   */
  private rateDemand(rows: readonly { model: string; slots: number; target: number }[]): Map<string, number> {
    const demand = new Map<string, number>();
    for (const r of rows) {
      const b = this.budgets.get(r.model);
      if (!b?.hasWork || this.stopping) demand.set(r.model, 0);
      else
        demand.set(
          r.model,
          Math.max(Math.min(r.slots, r.target), 2 * (this.startedSinceRebalance.get(r.model) ?? 0)),
        );
    }
    return demand;
  }

  // ---- flush: write outcomes and claim ---------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushQueued || this.stopped) return;
    this.flushQueued = true;
    const run = () => {
      this.flushQueued = false;
      this.flush();
    };
    setImmediate(run);
  }

  /** Starts flush statements while there is something to write or claim, up to the depth. */
  private flush(): void {
    while (this.flushes.size < this.depth) {
      const wait = this.backoffUntil - Date.now();
      if (wait > 0) {
        if (!this.backoffTimer) {
          this.backoffTimer = setTimeout(() => {
            this.backoffTimer = null;
            this.scheduleFlush();
          }, wait);
        }
        return;
      }
      const plan = this.planClaim();
      const claiming = plan.models.length > 0;
      // Claims first: a freed slot's refill does not wait behind writes (PostgreSQL's work per written
      // row is as large as per claimed row). Writes go in their own statements once no claim is
      // running, or sooner when WRITE_BACKLOG of them are waiting (a busy daemon at zero latency).
      let writes: ResultWrite[] = [];
      if (!claiming) {
        if (this.claimsRunning > 0 && this.results.length < WRITE_BACKLOG) return;
        writes = this.takeWrites();
      }
      if (writes.length === 0 && plan.models.length === 0) return;
      if (claiming) this.claimsRunning++;
      const run = this.runFlush(writes, plan).finally(() => {
        if (claiming) this.claimsRunning--;
        this.flushes.delete(run);
        this.scheduleFlush();
      });
      this.flushes.add(run);
    }
  }

  /**
   * The next writes for one statement: up to MAX_FLUSH of them and MAX_FLUSH_BODY_CHARS of bodies;
   * a body of LARGE_BODY_CHARS or more alone (completeParams).
   */
  private takeWrites(): ResultWrite[] {
    const results = this.results;
    if ((results[0]?.body?.length ?? 0) >= LARGE_BODY_CHARS) return results.splice(0, 1);
    const most = Math.min(results.length, MAX_FLUSH);
    let n = 0;
    for (let chars = 0; n < most && chars < MAX_FLUSH_BODY_CHARS; n++) {
      const length = results[n]!.body?.length ?? 0;
      if (length >= LARGE_BODY_CHARS) break;
      chars += length;
    }
    return results.splice(0, n);
  }

  /** Caps per model for the next claim, reserved until the claim returns. */
  private planClaim(): ClaimPlan {
    const plan: ClaimPlan = { models: [], wants: [], held: [], routes: [], units: [] };
    if (this.stopping || this.rebalancing) return plan;
    for (const [model, b] of this.budgets) {
      if (!b.hasWork || b.routes.length === 0) continue;
      const held = this.held(model, b);
      const share = Math.min(b.slots, b.target, this.rates.concurrencyCap(model));
      const room = share - held;
      if (room <= 0) continue;
      // At most 1/depth of the share per claim: the in-flight set splits into groups that cycle
      // (claim, send, write) independently, so statements overlap with HTTP and each other. One claim
      // taking every free slot kept a single statement in flight, in lockstep with the HTTP wave.
      const cap = Math.min(
        room,
        Math.ceil(share / this.depth),
        this.limiterWant(model, held),
        this.rates.admissible(model),
      );
      if (cap <= 0) continue;
      plan.models.push(model);
      plan.wants.push(cap);
      plan.held.push(held);
      plan.routes.push(`{${b.routes.join(',')}}`);
      plan.units.push(this.rates.reserve(model, cap));
      b.reserved += cap;
      b.claims++;
    }
    return plan;
  }

  private async runFlush(writes: ResultWrite[], plan: ClaimPlan): Promise<void> {
    this.writing.add(writes);
    const started = process.hrtime.bigint();
    let claimed: ClaimedRow[] = [];
    let stale = new Set<string>();
    let ok = false;
    try {
      ({ claimed, stale } = await this.flushStatement(writes, plan));
      ok = true;
      this.backoff = 0;
    } catch (err) {
      this.results.unshift(...writes);
      this.backoff = Math.min(5000, Math.max(100, this.backoff * 2));
      this.backoffUntil = Date.now() + this.backoff * (0.5 + Math.random() / 2);
      this.log.warn('write/claim failed; backing off', { ...errorFields(err), backoffMs: this.backoff });
      if (isConnectionError(err) || (err as Error).name === 'QueryTimeoutError') {
        this.maintenance.reclaimOrphansSoon();
      }
    } finally {
      this.writing.delete(writes);
    }
    if (plan.models.length > 0 && ok) {
      this.metrics.claimDuration.observe(
        { daemon: this.id },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
    }
    // Dispatch first (in flight from now on), then release the reservations: a slot is never free twice.
    for (const row of claimed) this.dispatcher.dispatch(row);
    const got = new Map<string, number>();
    for (const row of claimed) got.set(row.model, (got.get(row.model) ?? 0) + 1);
    for (let i = 0; i < plan.models.length; i++) {
      const model = plan.models[i]!;
      // The rate wallet swaps the reservation for the rows' estimated costs (none came back on failure).
      this.rates.claimed(
        model,
        plan.wants[i]!,
        plan.units[i]!,
        claimed.filter((r) => r.model === model),
      );
      this.startedSinceRebalance.set(
        model,
        (this.startedSinceRebalance.get(model) ?? 0) + (got.get(model) ?? 0),
      );
      const b = this.budgets.get(plan.models[i]!);
      if (!b) continue;
      b.reserved -= plan.wants[i]!;
      b.claims--;
      // A short claim while no other claim of the model ran: nothing more is claimable now.
      if (ok && (got.get(plan.models[i]!) ?? 0) < plan.wants[i]! && b.claims === 0) {
        b.hasWork = false;
        if (b.peers > 0 && b.slots > this.held(plan.models[i]!, b)) this.requestRebalance(GIVE_BACK_DELAY_MS);
      }
    }
    if (ok) this.afterWrite(writes, stale);
  }

  /** One autocommit statement: a claim (no writes, see flush()) or a write of outcomes. */
  private async flushStatement(
    writes: ResultWrite[],
    plan: ClaimPlan,
  ): Promise<{ claimed: ClaimedRow[]; stale: Set<string> }> {
    const claim = plan.models.length > 0;
    const q: pg.QueryConfig = claim
      ? {
          ...this.sql.claim,
          values: [plan.models, plan.wants, plan.held, this.id, leaseMs(this.config), plan.routes],
        }
      : this.completeQuery(writes);
    const rows = await withClient(this.pool, this.config.dbTimeoutMs, 'write/claim', async (c) => {
      if (this.config.synchronousCommit) return (await c.query(q)).rows;
      // Opt-in: commit without waiting for the WAL flush (SET LOCAL needs a transaction).
      try {
        await c.query('BEGIN; SET LOCAL synchronous_commit = off');
        const { rows } = await c.query(q);
        await c.query('COMMIT');
        return rows;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      }
    });
    if (claim) return { claimed: rows as ClaimedRow[], stale: new Set() };
    return { claimed: [], stale: new Set((rows as { id: string }[]).map((r) => r.id)) };
  }

  private completeQuery(writes: ResultWrite[]): pg.QueryConfig {
    return {
      ...this.sql.complete,
      values: this.completeParams(writes),
    };
  }

  /**
   * complete.ts's parameters: the daemon id, the writes as JSON (extra keys are ignored) and the
   * body of a lone large write (takeWrites), which its JSON then leaves out.
   */
  private completeParams(writes: ResultWrite[]): unknown[] {
    const large = writes.length === 1 && (writes[0]!.body?.length ?? 0) >= LARGE_BODY_CHARS;
    if (!large) return [this.id, JSON.stringify(writes), null];
    return [this.id, JSON.stringify([{ ...writes[0], body: null }]), writes[0]!.body];
  }

  /** Metrics, stale-write accounting, retry wake-ups and finalize for batches that may have ended. */
  private afterWrite(writes: ResultWrite[], stale: Set<string>): void {
    if (writes.length === 0) return;
    const toFinalize = new Set<string>();
    for (const w of writes) {
      if (stale.has(w.id)) {
        this.metrics.staleWrites.inc({ daemon: this.id });
        this.log.info('stale write refused: the request moved on', { requestId: w.id, state: w.state });
        continue;
      }
      if (w.state === 'completed') this.metrics.completed.inc({ model: this.metrics.model(w.model) });
      else if (w.state === 'failed')
        this.metrics.failed.inc({ model: this.metrics.model(w.model), reason: w.reason ?? 'unknown' });
      if (w.state === 'pending') {
        this.retryDueAt(w.notBefore?.getTime() ?? Date.now());
      } else if (this.dispatcher.batchInFlight(w.batchId) === 0) {
        toFinalize.add(w.batchId);
      }
    }
    for (const batchId of toFinalize) this.maintenance.finalizeSoon(batchId);
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
    const deadline = Date.now() + Math.max(2000, this.config.dbTimeoutMs);
    while ((this.results.length > 0 || this.flushes.size > 0) && Date.now() < deadline) {
      this.flush();
      const pending = [...this.flushes];
      await Promise.race([
        pending.length > 0 ? Promise.allSettled(pending) : new Promise((r) => setTimeout(r, 50)),
        new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now()))),
      ]);
    }
    this.stopped = true;
    if (this.rebalanceTimer) clearTimeout(this.rebalanceTimer);
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    await this.rebalancing?.catch(() => {});
    await this.maintenance.stop();
    await this.upstream.close();
    if (this.results.length > 0) {
      this.log.warn('stopped with unwritten results; their rows will be reclaimed', {
        n: this.results.length,
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
