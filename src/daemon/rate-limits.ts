import type pg from 'pg';
import {
  configureRateLimitsSql,
  learnRateLimitsSql,
  leaseRatesSql,
  lockRatesSql,
  pauseModelSql,
  publishRateUsageSql,
} from '../db/sql/queue/rate-budget.js';
import {
  type AimdState,
  aimdAllowed,
  aimdSignal,
  aimdStart,
  aimdUpdate,
} from '../domain/adaptive-concurrency.js';
import { type RateLimitInfo, tokenWindow } from '../domain/rate-limit-headers.js';
import {
  admissible,
  applyGrant,
  demand,
  giveBack,
  limited,
  type ModelRateLimit,
  newWallet,
  type RateLimits,
  type RateWallet,
  reserve,
  settle,
  throttled,
} from '../domain/rate-wallet.js';
import type { AttemptOutcome } from '../domain/retry.js';
import { estimateTokenCost } from '../domain/token-cost.js';
import { tokenCounterFor } from './tokenizer.js';

/**
 * The daemon's side of requests/tokens-per-minute limits (issue 11; design in
 * docs/decisions/rate-limits.md): one wallet per model (src/domain/rate-wallet.ts), the upstream's
 * headers turned into learned limits, observations and pauses, the lease inside the slot
 * rebalance's transaction (src/db/sql/queue/rate-budget.ts), usage per minute for the metrics, and the
 * optional adaptive concurrency per model. The daemon's shell calls it at four points: planning a
 * claim (admissible, reserve), after a claim (claimed), after every attempt (observe) and in every
 * rebalance (lease). A model with no limit configured, none learned and no pause costs a map lookup
 * per claim and per attempt, and one lock query a second while any model is rebalanced.
 */

export type { ModelRateLimit } from '../domain/rate-wallet.js';

export interface RateLimitSettings {
  modelRateLimits: Record<string, ModelRateLimit>;
  /** Output tokens counted for a request that names no maximum. */
  defaultMaxOutputTokens: number;
  /** Seconds of refill a model's bucket holds (its largest burst). */
  rateBurstSeconds: number;
  /** Learn limits from the upstream's headers for models with none configured. */
  learnRateLimits: boolean;
}

/** What one model's limits look like now, for metrics, the dashboard and the progress line. */
export interface ModelRateStatus {
  model: string;
  rpm: number | null;
  tpm: number | null;
  /** Epoch ms until which the model is paused (0: not paused). */
  pausedUntil: number;
  /** Requests and tokens (estimated) this daemon started in the last minute. */
  requestsPerMinute: number;
  tokensPerMinute: number;
  /** This daemon's adaptive concurrency for the model, or null when not adaptive. */
  adaptiveConcurrency: number | null;
  /** The wallet is empty: the model waits for the next grant. */
  waiting: boolean;
}

interface ModelRate {
  wallet: RateWallet;
  /** The model has a model_rate_limits row (configured, learned, or paused). */
  rated: boolean;
  /** Limits read from the upstream's headers, and what was last written of them. */
  learned: { rpm: number | null; tpm: number | null };
  written: { rpm: number | null; tpm: number | null };
  /** The newest remaining counts an answer reported, not yet passed to a lease. */
  observed: { requests: number | null; tokens: number | null; at: number } | null;
  /** Requests and tokens started per second, the last 60 seconds (a ring indexed by second). */
  usage: { second: number; requests: number; tokens: number }[];
  aimd: AimdState | null;
  /** A pause write is on its way for at least this end. */
  pauseWriting: number;
}

const EMPTY_LIMITS: RateLimits = { rpm: null, tpm: null };
/** How often a daemon with no rated model looks for rows other daemons created (a pause, learned limits). */
const DISCOVER_MS = 1000;
/** How often a daemon publishes its usage per minute and adaptive concurrency (model_rate_usage). */
export const PUBLISH_MS = 1000;

function positive(n: number | undefined): number | null {
  return n !== undefined && Number.isFinite(n) && n > 0 ? Math.floor(n) : null;
}

export class DaemonRateLimits {
  private readonly models = new Map<string, ModelRate>();
  private readonly sql: Record<'lock' | 'lease' | 'pause' | 'configure' | 'learn' | 'publish', string>;
  private lastDiscovery = Number.NEGATIVE_INFINITY;
  private lastPublished = Number.NEGATIVE_INFINITY;
  /** A publish was skipped by the once-a-second rule: what the page shows may predate the last sends. */
  private unpublished = false;

  /** Whether usage changed since the last publish was skipped (the shell publishes once more, idle). */
  get hasUnpublished(): boolean {
    return this.unpublished;
  }
  /** Adaptive models' ceilings (their concurrency limits). */
  private readonly aimdMax = new Map<string, number>();

  constructor(
    schema: string,
    private readonly settings: RateLimitSettings,
    private readonly onError: (what: string, err: unknown) => void = () => {},
  ) {
    this.sql = {
      lock: lockRatesSql(schema),
      lease: leaseRatesSql(schema),
      pause: pauseModelSql(schema),
      configure: configureRateLimitsSql(schema),
      learn: learnRateLimitsSql(schema),
      publish: publishRateUsageSql(schema),
    };
  }

  private configured(model: string): RateLimits {
    const c = this.settings.modelRateLimits[model];
    return c ? { rpm: positive(c.rpm), tpm: positive(c.tpm) } : EMPTY_LIMITS;
  }

  private state(model: string): ModelRate {
    let s = this.models.get(model);
    if (!s) {
      const limits = this.configured(model);
      const adaptive = this.settings.modelRateLimits[model]?.adaptiveConcurrency === true;
      s = {
        wallet: newWallet(limits, this.settings.defaultMaxOutputTokens + 100),
        rated: limits.rpm !== null || limits.tpm !== null,
        learned: { rpm: null, tpm: null },
        written: { rpm: null, tpm: null },
        observed: null,
        usage: Array.from({ length: 60 }, () => ({ second: -1, requests: 0, tokens: 0 })),
        aimd: adaptive ? aimdStart({ max: Number.MAX_SAFE_INTEGER, min: 1, decreaseFactor: 0.9 }, 1e6) : null,
        pauseWriting: 0,
      };
      this.models.set(model, s);
    }
    return s;
  }

  /** Writes the configured limits (daemon start; configuration is the latest word). */
  async configure(pool: pg.Pool | pg.PoolClient): Promise<void> {
    const entries = Object.entries(this.settings.modelRateLimits)
      .map(([model, c]) => [model, positive(c.rpm), positive(c.tpm)] as const)
      .filter(([, rpm, tpm]) => rpm !== null || tpm !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (entries.length === 0) return;
    await pool.query(this.sql.configure, [
      entries.map(([m]) => m),
      entries.map(([, r]) => r),
      entries.map(([, , t]) => t),
      this.settings.rateBurstSeconds,
    ]);
    for (const [model] of entries) this.state(model).rated = true;
  }

  /** Changes one model's configured limits at run time (setModelRateLimits). */
  async setLimits(pool: pg.Pool, model: string, limits: ModelRateLimit): Promise<void> {
    this.settings.modelRateLimits[model] = { ...this.settings.modelRateLimits[model], ...limits };
    const rpm = positive(limits.rpm);
    const tpm = positive(limits.tpm);
    await pool.query(this.sql.configure, [[model], [rpm], [tpm], this.settings.rateBurstSeconds]);
    this.state(model).rated = true;
  }

  /** The model is paced by rate limits: its 429s are the pacing's misses (settle.ts SettleInput.paced). */
  paced(model: string): boolean {
    const s = this.models.get(model);
    return s !== undefined && (s.rated || limited(s.wallet));
  }

  /** Rows a claim of the model may take now (Infinity when nothing limits it). */
  admissible(model: string, now: number = Date.now()): number {
    const s = this.models.get(model);
    if (!s) return Number.POSITIVE_INFINITY;
    return admissible(s.wallet, now);
  }

  /**
   * Whether rows of the model may be sent now (false while it is paused after a 429): the slot
   * ledger's `sendable` hook (src/daemon/ledger.ts), with admissible and concurrencyCap.
   */
  sendable(model: string, now: number = Date.now()): boolean {
    const s = this.models.get(model);
    return s === undefined || s.wallet.pausedUntil <= now;
  }

  /** The most requests of the model this daemon keeps in flight (adaptive), Infinity when not adaptive. */
  concurrencyCap(model: string): number {
    const a = this.models.get(model)?.aimd;
    return a ? aimdAllowed(a) : Number.POSITIVE_INFINITY;
  }

  /** Tells the adaptive limit its ceiling (the model's concurrency limit, from the slot rebalance). */
  setConcurrencyLimit(model: string, limit: number): void {
    if (this.settings.modelRateLimits[model]?.adaptiveConcurrency !== true) return;
    const s = this.state(model);
    if (!s.aimd) return;
    const max = Math.max(1, limit);
    this.aimdMax.set(model, max);
    s.aimd = { ...s.aimd, limit: Math.min(s.aimd.limit, max) };
  }

  /** Reserves `count` rows for a claim about to run; returns the unit cost reserved (pass it to claimed). */
  reserve(model: string, count: number): number {
    const s = this.models.get(model);
    if (!s || !limited(s.wallet)) return 0;
    reserve(s.wallet, count);
    return s.wallet.avgCost;
  }

  /**
   * A claim of the model came back: charges the rows' estimated costs against the reservation and
   * counts them as started. Estimates only for models with a token limit in force.
   */
  claimed(
    model: string,
    reserved: number,
    unitCost: number,
    rows: readonly { body: string; path: string }[],
    now: number = Date.now(),
  ): void {
    const s = this.models.get(model);
    if (!s) return;
    let costs: number[] = [];
    if (s.wallet.limits.tpm !== null) {
      const counter = tokenCounterFor(model);
      const options = { defaultMaxOutputTokens: this.settings.defaultMaxOutputTokens };
      costs = rows.map((r) => estimateTokenCost(r.body, r.path, options, counter));
    }
    if (limited(s.wallet)) {
      settle(s.wallet, reserved, unitCost, s.wallet.limits.tpm !== null ? costs : rows.map(() => 0));
    }
    let tokens = 0;
    for (const c of costs) tokens += c;
    this.recordUsage(s, now, rows.length, tokens);
  }

  private recordUsage(s: ModelRate, now: number, requests: number, tokens: number): void {
    if (requests === 0) return;
    const second = Math.floor(now / 1000);
    const slot = s.usage[second % 60]!;
    if (slot.second !== second) {
      slot.second = second;
      slot.requests = 0;
      slot.tokens = 0;
    }
    slot.requests += requests;
    slot.tokens += tokens;
  }

  /**
   * After every attempt: learned limits and remaining counts from the headers, a 429's pause, the
   * adaptive concurrency. Returns the pause to write (model, ms) when this answer paused the model.
   */
  observe(
    model: string,
    outcome: AttemptOutcome,
    timeout: boolean,
    inFlight: number,
    latencyMs: number,
    now: number = Date.now(),
  ): number | null {
    const raw: RateLimitInfo | null | undefined = outcome.kind === 'http' ? outcome.rateLimit : null;
    // A hint alone (retry-after) is no limit header: such an upstream is paced as before.
    const info = raw && (raw.requests || raw.tokens || raw.inputTokens || raw.outputTokens) ? raw : null;
    let s = this.models.get(model);
    if (s?.aimd) {
      const signal = aimdSignal({ status: outcome.kind === 'http' ? outcome.status : null, timeout });
      const max = this.aimdMax.get(model) ?? Number.MAX_SAFE_INTEGER;
      s.aimd = aimdUpdate(s.aimd, signal, inFlight, latencyMs, now, { max, min: 1, decreaseFactor: 0.9 });
    }
    if (!info) {
      if (!s || outcome.kind !== 'http' || outcome.status !== 429 || outcome.retryAfterMs === null)
        return null;
      if (!this.paced(model)) return null;
      return this.throttle(s, outcome.retryAfterMs, now);
    }
    s ??= this.state(model);
    const tokens = tokenWindow(info);
    if (this.settings.learnRateLimits) {
      if (info.requests?.limit) s.learned.rpm = Math.floor(info.requests.limit);
      if (tokens?.limit) s.learned.tpm = Math.floor(tokens.limit);
    }
    const remainingRequests = info.requests?.remaining ?? null;
    const remainingTokens = tokens?.remaining ?? null;
    if (remainingRequests !== null || remainingTokens !== null) {
      s.observed = { requests: remainingRequests, tokens: remainingTokens, at: now };
    }
    if (outcome.kind === 'http' && outcome.status === 429 && outcome.retryAfterMs !== null) {
      return this.throttle(s, outcome.retryAfterMs, now);
    }
    return null;
  }

  private throttle(s: ModelRate, retryAfterMs: number, now: number): number | null {
    throttled(s.wallet, retryAfterMs, now);
    s.rated = true;
    const end = now + retryAfterMs;
    if (end <= s.pauseWriting) return null;
    s.pauseWriting = end;
    return retryAfterMs;
  }

  /** Writes a pause for every daemon (one statement; call when observe returned a duration). */
  async pause(pool: pg.Pool, model: string, ms: number): Promise<void> {
    try {
      const { rows } = await pool.query<{ paused_until_ms: number }>(this.sql.pause, [model, ms]);
      const s = this.state(model);
      s.wallet.pausedUntil = Math.max(s.wallet.pausedUntil, rows[0]?.paused_until_ms ?? 0);
    } catch (err) {
      this.onError('rate-limit pause', err);
    }
  }

  /** Learned limits not yet written (write them before the rebalance's transaction). */
  private learnedToWrite(): string[] {
    const out: string[] = [];
    for (const [model, s] of this.models) {
      if (s.learned.rpm === null && s.learned.tpm === null) continue;
      if (s.learned.rpm !== s.written.rpm || s.learned.tpm !== s.written.tpm) out.push(model);
    }
    return out.sort();
  }

  /** Writes newly learned limits (outside the rebalance's transaction; rare). */
  async writeLearned(pool: pg.Pool | pg.PoolClient): Promise<void> {
    const models = this.learnedToWrite();
    if (models.length === 0) return;
    const st = models.map((m) => this.models.get(m)!);
    await pool.query(this.sql.learn, [
      models,
      st.map((s) => s.learned.rpm),
      st.map((s) => s.learned.tpm),
      st.map((s) => s.observed?.requests ?? null),
      st.map((s) => s.observed?.tokens ?? null),
      this.settings.rateBurstSeconds,
      st.map((s) => s.observed?.at ?? null),
    ]);
    for (const s of st) {
      s.written = { ...s.learned };
      s.rated = true;
    }
  }

  /**
   * Inside the slot rebalance's transaction (after the model_limits locks): locks the rate rows of
   * these models, returns every wallet and takes the grants. `rows` is what the daemon may start of
   * each model until its next rebalance; `peers` the other daemons with demand (budget.ts).
   */
  async lease(
    client: pg.PoolClient,
    models: readonly string[],
    rows: ReadonlyMap<string, number>,
    peers: ReadonlyMap<string, number>,
    now: number = Date.now(),
  ): Promise<void> {
    const anyRated = models.some((m) => this.models.get(m)?.rated === true);
    if (!anyRated && now - this.lastDiscovery < DISCOVER_MS) return;
    const sorted = [...models].sort();
    const locked = await client.query<{ model: string }>(this.sql.lock, [sorted]);
    if (!anyRated) this.lastDiscovery = now;
    if (locked.rows.length === 0) return;
    const names = locked.rows.map((r) => r.model);
    const asks = names.map((m) => {
      const s = this.state(m);
      s.rated = true;
      const back = giveBack(s.wallet);
      const want = demand(s.wallet, Math.max(1, rows.get(m) ?? 1));
      const obs = s.observed;
      s.observed = null;
      return { back, want, obs, peers: peers.get(m) ?? 0 };
    });
    let result: pg.QueryResult<{
      model: string;
      requests: number;
      tokens: number;
      rpm: number | null;
      tpm: number | null;
      paused_ms: number;
    }>;
    try {
      result = await client.query(this.sql.lease, [
        names,
        asks.map((a) => a.back.requests),
        asks.map((a) => a.back.tokens),
        asks.map((a) => a.want.requests),
        asks.map((a) => a.want.tokens),
        asks.map((a) => a.peers),
        this.settings.rateBurstSeconds,
        asks.map((a) => a.obs?.requests ?? null),
        asks.map((a) => a.obs?.tokens ?? null),
        asks.map((a) => a.obs?.at ?? null),
      ]);
    } catch (err) {
      // The transaction rolls back: the wallets were not returned, so they are ours again.
      names.forEach((m, i) => {
        const w = this.state(m).wallet;
        w.requests += asks[i]!.back.requests;
        w.tokens += asks[i]!.back.tokens;
      });
      throw err;
    }
    for (const r of result.rows) {
      const s = this.state(r.model);
      applyGrant(
        s.wallet,
        {
          requests: r.requests,
          tokens: r.tokens,
          limits: { rpm: r.rpm, tpm: r.tpm },
          pausedUntil: r.paused_ms,
        },
        now,
      );
    }
  }

  /**
   * Inside the slot rebalance's transaction, at most once a second: this daemon's usage in the last
   * minute and adaptive concurrency of every model with rate state, for the dashboard (migration 0014).
   */
  async publish(client: pg.PoolClient, daemonId: string, now: number = Date.now()): Promise<void> {
    if (now - this.lastPublished < PUBLISH_MS) {
      this.unpublished = true;
      return;
    }
    this.unpublished = false;
    const rows = this.status(now).filter(
      (r) => r.rpm !== null || r.tpm !== null || r.adaptiveConcurrency !== null || r.requestsPerMinute > 0,
    );
    this.lastPublished = now;
    if (rows.length === 0) return;
    rows.sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0));
    await client.query(this.sql.publish, [
      daemonId,
      rows.map((r) => r.model),
      rows.map((r) => r.requestsPerMinute),
      rows.map((r) => Math.round(r.tokensPerMinute)),
      rows.map((r) =>
        r.adaptiveConcurrency === null ? null : Math.max(1, Math.round(r.adaptiveConcurrency)),
      ),
    ]);
  }

  /**
   * Undoes lease() when its transaction did not commit after the lease ran (the grants never
   * happened and the returns were not taken back): call with the same models on a failed COMMIT.
   * Conservative: the wallets are emptied (a grant that did not commit must not be spent).
   */
  forgetGrants(models: readonly string[]): void {
    for (const m of models) {
      const s = this.models.get(m);
      if (s) giveBack(s.wallet);
    }
  }

  /** The latest of the models' pauses and empty wallets, for the progress line; null when none waits. */
  waiting(now: number = Date.now()): { model: string; until: number | null }[] {
    const out: { model: string; until: number | null }[] = [];
    for (const [model, s] of this.models) {
      if (s.wallet.pausedUntil > now) out.push({ model, until: s.wallet.pausedUntil });
      else if (limited(s.wallet) && admissible(s.wallet, now) === 0) out.push({ model, until: null });
    }
    return out;
  }

  /** Every model with rate state, for metrics and the dashboard. */
  status(now: number = Date.now()): ModelRateStatus[] {
    const second = Math.floor(now / 1000);
    return [...this.models].map(([model, s]) => {
      let requests = 0;
      let tokens = 0;
      for (const u of s.usage) {
        if (u.second > second - 60 && u.second <= second) {
          requests += u.requests;
          tokens += u.tokens;
        }
      }
      return {
        model,
        rpm: s.wallet.limits.rpm,
        tpm: s.wallet.limits.tpm,
        pausedUntil: s.wallet.pausedUntil > now ? s.wallet.pausedUntil : 0,
        requestsPerMinute: requests,
        tokensPerMinute: tokens,
        adaptiveConcurrency: s.aimd ? aimdAllowed(s.aimd) : null,
        waiting: limited(s.wallet) && admissible(s.wallet, now) === 0,
      };
    });
  }
}
