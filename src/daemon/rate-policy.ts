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
 * The daemon's rate-limit policy without I/O (the shell that reads and writes the database is
 * rate-limits.ts): one wallet per model (src/domain/rate-wallet.ts), the upstream's headers turned
 * into learned limits, observations and pauses, usage per minute, the optional adaptive concurrency
 * per model, and what each of the shell's statements sends and what its answer changes. Everything
 * here is synchronous and takes the time as an argument.
 *
 * Longer than ~400 lines by design: one class owns each model's wallet and every change to it (a
 * claim, an answer, a lease, a publish); split across files, those parts would share the private
 * per-model state through a wider interface than the one the daemon's shell uses.
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

/** One model's part of a lease: what the wallet gives back, what it asks for, the latest observation. */
export interface LeaseAsk {
  back: { requests: number; tokens: number };
  want: { requests: number; tokens: number };
  obs: { requests: number | null; tokens: number | null; at: number } | null;
  peers: number;
}

/** One model's grant as the lease statement returns it. */
export interface LeaseGrant {
  model: string;
  requests: number;
  tokens: number;
  rpm: number | null;
  tpm: number | null;
  paused_ms: number;
}

const EMPTY_LIMITS: RateLimits = { rpm: null, tpm: null };
/** How often a daemon with no rated model looks for rows other daemons created (a pause, learned limits). */
const DISCOVER_MS = 1000;
/** How often a daemon publishes its usage per minute and adaptive concurrency (model_rate_usage). */
export const PUBLISH_MS = 1000;

export function positive(n: number | undefined): number | null {
  return n !== undefined && Number.isFinite(n) && n > 0 ? Math.floor(n) : null;
}

export class RateLimitPolicy {
  private readonly models = new Map<string, ModelRate>();
  private lastDiscovery = Number.NEGATIVE_INFINITY;
  private lastPublished = Number.NEGATIVE_INFINITY;
  /** A publish was skipped by the once-a-second rule: what the page shows may predate the last sends. */
  private unpublished = false;
  /** Adaptive models' ceilings (their concurrency limits). */
  private readonly aimdMax = new Map<string, number>();

  constructor(protected readonly settings: RateLimitSettings) {}

  /** Whether usage changed since the last publish was skipped (the shell publishes once more, idle). */
  get hasUnpublished(): boolean {
    return this.unpublished;
  }

  private configured(model: string): RateLimits {
    const c = this.settings.modelRateLimits[model];
    return c ? { rpm: positive(c.rpm), tpm: positive(c.tpm) } : EMPTY_LIMITS;
  }

  protected state(model: string): ModelRate {
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

  /** The configured limits to write at the daemon's start, by model name: [model, rpm, tpm]. */
  protected configuredEntries(): (readonly [string, number | null, number | null])[] {
    return Object.entries(this.settings.modelRateLimits)
      .map(([model, c]) => [model, positive(c.rpm), positive(c.tpm)] as const)
      .filter(([, rpm, tpm]) => rpm !== null || tpm !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** These models have a model_rate_limits row now. */
  protected markRated(models: Iterable<string>): void {
    for (const model of models) this.state(model).rated = true;
  }

  /** Takes one model's new configured limits (setModelRateLimits); returns what to write. */
  protected setConfigured(model: string, limits: ModelRateLimit): { rpm: number | null; tpm: number | null } {
    this.settings.modelRateLimits[model] = { ...this.settings.modelRateLimits[model], ...limits };
    return { rpm: positive(limits.rpm), tpm: positive(limits.tpm) };
  }

  /** A pause every daemon sees was written: the model waits at least until `pausedUntilMs`. */
  protected paused(model: string, pausedUntilMs: number): void {
    const s = this.state(model);
    s.wallet.pausedUntil = Math.max(s.wallet.pausedUntil, pausedUntilMs);
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

  /** Learned limits not yet written (write them before the rebalance's transaction). */
  protected learnedToWrite(): string[] {
    const out: string[] = [];
    for (const [model, s] of this.models) {
      if (s.learned.rpm === null && s.learned.tpm === null) continue;
      if (s.learned.rpm !== s.written.rpm || s.learned.tpm !== s.written.tpm) out.push(model);
    }
    return out.sort();
  }

  /** The learned limits of `models` were written. */
  protected markWritten(models: readonly string[]): void {
    for (const m of models) {
      const s = this.models.get(m)!;
      s.written = { ...s.learned };
      s.rated = true;
    }
  }

  /** The learn statement's parameters for `models` (learnedToWrite's). */
  protected learnedParams(models: readonly string[]): unknown[] {
    const st = models.map((m) => this.models.get(m)!);
    return [
      models,
      st.map((s) => s.learned.rpm),
      st.map((s) => s.learned.tpm),
      st.map((s) => s.observed?.requests ?? null),
      st.map((s) => s.observed?.tokens ?? null),
      this.settings.rateBurstSeconds,
      st.map((s) => s.observed?.at ?? null),
    ];
  }

  /**
   * Which of the rebalanced models' rate rows a lease locks (sorted), or null when none is rated
   * and the last look for rows other daemons created is under DISCOVER_MS old.
   */
  protected leaseModels(
    models: readonly string[],
    now: number,
  ): { sorted: string[]; anyRated: boolean } | null {
    const anyRated = models.some((m) => this.models.get(m)?.rated === true);
    if (!anyRated && now - this.lastDiscovery < DISCOVER_MS) return null;
    return { sorted: [...models].sort(), anyRated };
  }

  /** The look for other daemons' rows happened (a lease locked with no rated model). */
  protected discovered(now: number): void {
    this.lastDiscovery = now;
  }

  /** Per locked model: its wallet given back, its demand for `rows`, its newest observation (taken). */
  protected leaseAsks(
    names: readonly string[],
    rows: ReadonlyMap<string, number>,
    peers: ReadonlyMap<string, number>,
  ): LeaseAsk[] {
    return names.map((m) => {
      const s = this.state(m);
      s.rated = true;
      const back = giveBack(s.wallet);
      const want = demand(s.wallet, Math.max(1, rows.get(m) ?? 1));
      const obs = s.observed;
      s.observed = null;
      return { back, want, obs, peers: peers.get(m) ?? 0 };
    });
  }

  /** The lease's transaction rolled back: the wallets given back are ours again. */
  protected restoreAsks(names: readonly string[], asks: readonly LeaseAsk[]): void {
    names.forEach((m, i) => {
      const w = this.state(m).wallet;
      w.requests += asks[i]!.back.requests;
      w.tokens += asks[i]!.back.tokens;
    });
  }

  /** The lease's grants into the wallets. */
  protected applyGrants(grants: readonly LeaseGrant[], now: number): void {
    for (const r of grants) {
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
   * The rows to publish now, by model name (models with limits, adaptive concurrency or usage), or
   * null when the last publish is under PUBLISH_MS old (then hasUnpublished says one is owed).
   */
  protected publishRows(now: number): ModelRateStatus[] | null {
    if (now - this.lastPublished < PUBLISH_MS) {
      this.unpublished = true;
      return null;
    }
    this.unpublished = false;
    const rows = this.status(now).filter(
      (r) => r.rpm !== null || r.tpm !== null || r.adaptiveConcurrency !== null || r.requestsPerMinute > 0,
    );
    this.lastPublished = now;
    return rows.sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0));
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
