/**
 * Longer than ~400 lines by design: the ledger is one state machine over one per-model record, and
 * its invariant (below) is kept by every method together; split, each part would need the others'
 * private state.
 *
 * The slot ledger: one daemon's bookkeeping of its share of each model's global limit (budget.ts)
 * and of the rows it holds. Pure: no I/O, no clock of its own (callers pass `now`); the daemon's
 * shell (daemon.ts) runs the statements and the HTTP it decides. Property-tested without a
 * database (test/daemon/ledger.test.ts).
 *
 * A row this daemon holds, per model:
 *
 *   planned ──claim commits──▶ queued ──take()──▶ in flight ──finished()──▶ (its write is the shell's)
 *   (reserved as                 │  ▲                 │
 *    `claiming`)                 │  └─ (a claim that came back short: the rest was never held)
 *                                ├──release(): stop, cancel, deadline, gone from the budget──▶ handed back
 *                                └──take(): past its deadline or its send-by time (lease)──▶ handed back
 *
 * Claimed rows are durable ('claimed' in the database, claim.ts) before they are queued, so a crash
 * loses none; a queued row is not at the upstream, so it needs no slot. Only take() puts a row in
 * flight, and only below the model's share:
 *
 *   Invariant: in flight ≤ min(slots, target, concurrency cap) when a row is taken. Slots never
 *   fall below in flight (the rebalance keeps what is used), so in flight ≤ slots always, and the
 *   sum of slots over daemons ≤ the model's limit (budget.ts): the upstream never sees more.
 *
 * Claiming ahead of need: a model's stock (queued + being claimed) aims at its free slots plus
 * `ahead`, the rows it sends at its observed rate during the longer of two claim round trips and
 * one attempt (within [minAhead, maxAhead], never more than its share). Attempts of one latency
 * finish in waves: sized by two round trips only, a wave of 100 freed slots found ≈ 20 rows queued
 * and the rest waited a claim round trip each wave; sized by one attempt (Little's law: rate ×
 * duration ≈ the rows in flight), the whole wave is refilled from the queue. A freed slot is then
 * refilled at once; a claim starts when the free slots would otherwise outrun the stock, or the
 * stock falls below half of `ahead`. Nothing is held ahead before a model's first attempt has
 * finished, and `ahead` decays with the rate, so rows that stop moving stop being claimed ahead.
 * Measured (`fusillade run`, 2,000 × 100 ms at 100 in flight, mock in its own process, 3 alternating
 * runs on the shared 2-core machine at load ≈ 13): mean in flight from the first send to the last
 * answer 70.6, 69.8, 79.7 sized by two round trips; 82.7, 80.0, 79.2 sized as now.
 *
 * Plug points (Hooks): an admission check per model (a rate-limit wallet: rows a claim may take now,
 * and whether queued rows may be sent now, e.g. during a pause), a concurrency cap (adaptive
 * concurrency), the limiter's appetite, and a ClaimPolicy that orders or trims a claim's entries
 * (e.g. owner fair share).
 */

/** What the ledger needs of a claimed row. */
export interface HeldRow {
  id: string;
  batchId: string;
  model: string;
  /** The batch's deadline (epoch ms), null for none: a row past it is never sent. */
  expiresMs: number | null;
  /**
   * The latest its attempt may start (epoch ms; absent or null for no bound): its lease must outlast
   * the attempt and its write, else a reclaim of the lease could send it beside this daemon. A row
   * still queued then is handed back, like one past its deadline, and a later claim leases it anew.
   */
  sendByMs?: number | null;
}

/** A model's budget as the last rebalance granted it (budget.ts rebalanceSql). */
export interface Budget {
  model: string;
  /** Slots granted in the database: the ceiling of what this daemon has in flight. */
  slots: number;
  /** Fair share within the room the others' slots leave (budget.ts): rows are sent only below min(slots, target). */
  target: number;
  /** The model's global limit. */
  limit: number;
  /** Other live daemons with demand for the model. */
  peers: number;
}

/** One model's part of a claim. */
export interface ClaimEntry {
  model: string;
  /** Most rows to take. */
  cap: number;
}

export interface Hooks {
  /** Rows of the model a claim may take now (a rate limit's wallet); Infinity when unlimited. */
  admissible?(model: string, now: number): number;
  /** Whether queued rows of the model may be sent now (false during a rate-limit pause). */
  sendable?(model: string, now: number): boolean;
  /** Most requests of the model this daemon keeps in flight (adaptive concurrency); Infinity when none. */
  concurrencyCap?(model: string): number;
  /** Rows the limiter wants in one claim of the model (Limiter.want), given those in flight. */
  want?(model: string, inFlight: number): number;
}

/** Orders or trims a claim's entries (e.g. fair shares between owners); the default keeps them. */
export interface ClaimPolicy {
  plan(entries: ClaimEntry[], now: number): ClaimEntry[];
}

export interface LedgerOptions {
  /** Most rows one claim takes of one model (claimBatchSize). */
  maxClaim: number;
  /** Bounds of a model's `ahead` (rows claimed beyond the free slots). */
  minAhead?: number;
  maxAhead?: number;
  /** Claim round trip assumed until one is measured. */
  claimLatencyMs?: number;
  hooks?: Hooks;
  policy?: ClaimPolicy;
}

interface Model<T extends HeldRow> {
  budget: Budget | null;
  inFlight: number;
  queue: T[];
  /** Sum of the caps of this model's claims still running. */
  claiming: number;
  /** Claims still running that include the model. */
  claims: number;
  /** Pending rows may be claimable (a short claim clears it; setLive/poke set it). */
  hasWork: boolean;
  /** Rows taken per ms, exponentially decayed (RATE_TAU_MS), when it was last updated and first. */
  rate: number;
  rateAt: number;
  rateSince: number | null;
  /** An attempt's duration, ms, exponentially averaged; null until one has finished. */
  attemptMs: number | null;
  /**
   * While a rebalance runs: the in-flight count it was told (`used`), which take() does not exceed
   * until its result is applied. The rebalance keeps at least `used` slots, so rows sent meanwhile
   * never stand on slots it gave to another daemon. Null when no rebalance runs.
   */
  frozen: number | null;
}

/** Time constant of the observed send rate. */
const RATE_TAU_MS = 1000;
/** Claim round trips of sending that `ahead` covers. */
const AHEAD_ROUND_TRIPS = 2;

export class SlotLedger<T extends HeldRow = HeldRow> {
  private readonly models = new Map<string, Model<T>>();
  private readonly minAhead: number;
  private readonly maxAhead: number;
  private readonly hooks: Hooks;
  private claimLatencyMs: number;
  private stopping = false;
  /** Batches (→ model) whose finalize waits for their model to run dry (mayHaveEnded). */
  private readonly heldBackEnds = new Map<string, string>();

  constructor(private readonly o: LedgerOptions) {
    this.minAhead = Math.max(0, o.minAhead ?? 0);
    this.maxAhead = Math.max(this.minAhead, o.maxAhead ?? o.maxClaim);
    this.claimLatencyMs = o.claimLatencyMs ?? 5;
    this.hooks = o.hooks ?? {};
  }

  private model(name: string): Model<T> {
    let m = this.models.get(name);
    if (!m) {
      m = {
        budget: null,
        inFlight: 0,
        queue: [],
        claiming: 0,
        claims: 0,
        hasWork: false,
        rate: 0,
        rateAt: 0,
        rateSince: null,
        attemptMs: null,
        frozen: null,
      };
      this.models.set(name, m);
    }
    return m;
  }

  /** The models with live work (the seed): they may be claimed; the others have nothing pending. */
  setLive(models: Iterable<string>): void {
    const live = new Set(models);
    for (const name of live) this.model(name).hasWork = true;
    for (const [name, m] of this.models) if (!live.has(name)) m.hasWork = false;
  }

  /** The models this daemon knows of (live, held or budgeted). */
  get modelNames(): string[] {
    return [...this.models.keys()];
  }

  /** The share a model's rows are sent within now. */
  private share(name: string, m: Model<T>): number {
    const b = m.budget;
    if (!b) return 0;
    const cap = this.hooks.concurrencyCap?.(name) ?? Number.POSITIVE_INFINITY;
    return Math.max(0, Math.min(b.slots, b.target, cap));
  }

  /**
   * Rows a model aims to hold beyond its free slots: its send rate over the longer of two claim
   * round trips and one attempt.
   */
  ahead(name: string, now: number): number {
    const m = this.models.get(name);
    if (!m) return 0;
    const floor = Math.min(this.share(name, m), this.minAhead);
    if (m.attemptMs === null || m.rateSince === null) return floor;
    // The decayed sum over the time observed so far (a bias-corrected average): the first waves of a
    // job count at their real rate, not diluted by the RATE_TAU_MS before the job began.
    const elapsed = Math.max(1, now - m.rateSince);
    const rate =
      (m.rate * Math.exp(-Math.max(0, now - m.rateAt) / RATE_TAU_MS)) /
      (1 - Math.exp(-elapsed / RATE_TAU_MS));
    const windowMs = Math.max(this.claimLatencyMs * AHEAD_ROUND_TRIPS, m.attemptMs);
    // Floor, and no floor of 1 by default: a daemon whose rows stopped moving (a stuck upstream, a
    // paused process) holds nothing ahead, so it takes no rows another daemon could send now.
    const want = Math.floor(rate * windowMs);
    return Math.min(this.share(name, m), Math.max(this.minAhead, Math.min(this.maxAhead, want)));
  }

  /** A claim's round trip, to size `ahead` (exponentially averaged). */
  observeClaimLatency(ms: number): void {
    if (Number.isFinite(ms) && ms >= 0) this.claimLatencyMs = 0.8 * this.claimLatencyMs + 0.2 * ms;
  }

  /** The claim planClaim would make now, without reserving it. */
  private draft(now: number): ClaimEntry[] {
    if (this.stopping) return [];
    let entries: ClaimEntry[] = [];
    for (const [name, m] of this.models) {
      if (!m.hasWork || !m.budget) continue;
      const share = this.share(name, m);
      if (share <= 0) continue;
      const free = Math.max(0, share - m.inFlight);
      const ahead = this.ahead(name, now);
      const stock = m.queue.length + m.claiming;
      const need = free + ahead - stock;
      if (need <= 0) continue;
      // Claim when the free slots would outrun the stock, or the stock runs low; not for every
      // single row (fewer, larger statements).
      if (free <= stock && stock >= ahead / 2) continue;
      const admissible = this.hooks.admissible?.(name, now) ?? Number.POSITIVE_INFINITY;
      const want = this.hooks.want?.(name, m.inFlight) ?? this.o.maxClaim;
      const cap = Math.floor(Math.min(need, this.o.maxClaim, admissible, want));
      if (cap > 0) entries.push({ model: name, cap });
    }
    if (this.o.policy && entries.length > 0) entries = this.o.policy.plan(entries, now);
    return entries.filter((e) => e.cap > 0);
  }

  /** Whether planClaim would claim anything now. */
  wantsClaim(now: number): boolean {
    return this.draft(now).length > 0;
  }

  /**
   * The next claim: per model with work, the rows to take, reserved as `claiming` until claimed()
   * is called with the same plan. Empty when no model needs rows now.
   */
  planClaim(now: number): ClaimEntry[] {
    const entries = this.draft(now);
    for (const e of entries) {
      const m = this.model(e.model);
      m.claiming += e.cap;
      m.claims++;
    }
    return entries;
  }

  /**
   * A planned claim came back (ok) or failed (!ok: nothing claimed). Its rows are queued; a model
   * whose part came back short while no other claim of it ran has nothing more claimable now.
   * Returns those models (run dry).
   */
  claimed(plan: readonly ClaimEntry[], rows: readonly T[], ok: boolean): string[] {
    const dry: string[] = [];
    const got = new Map<string, number>();
    for (const row of rows) {
      got.set(row.model, (got.get(row.model) ?? 0) + 1);
      this.model(row.model).queue.push(row);
    }
    for (const e of plan) {
      const m = this.model(e.model);
      m.claiming -= e.cap;
      m.claims--;
      if (ok && (got.get(e.model) ?? 0) < e.cap && m.claims === 0) {
        m.hasWork = false;
        dry.push(e.model);
      }
    }
    return dry;
  }

  /**
   * What the claim statement counts as already held for an entry of a plan just made (claim.ts caps
   * the entry at slots − held): the rows held beyond the `ahead` allowance, so the database's cap
   * lets exactly the free slots plus `ahead` be held, and a lowered or deleted budget row still
   * stops the claim.
   */
  claimHeld(entry: ClaimEntry, now: number): number {
    const m = this.models.get(entry.model);
    if (!m) return 0;
    const others = m.claiming - entry.cap;
    // May be negative: the cap is then above the slots by up to `ahead` (rows held, not sent).
    return m.inFlight + m.queue.length + others - this.ahead(entry.model, now);
  }

  /**
   * Rows to send now: queued rows of each model while its in-flight count is below its share (and
   * its rows are sendable), taken in claim order, models in turn. Rows whose batch deadline or
   * send-by time has passed are not sent: they come back in `expired` for the shell to hand back.
   */
  take(now: number): { send: T[]; expired: T[] } {
    const send: T[] = [];
    const expired: T[] = [];
    for (const [name, m] of this.models) {
      if (m.queue.length === 0) continue;
      const share = Math.min(this.share(name, m), m.frozen ?? Number.POSITIVE_INFINITY);
      if (m.inFlight >= share) continue;
      if (this.hooks.sendable && !this.hooks.sendable(name, now)) continue;
      let n = 0;
      while (m.inFlight < share && m.queue.length > 0) {
        const row = m.queue.shift()!;
        if (
          (row.expiresMs !== null && row.expiresMs <= now) ||
          (row.sendByMs != null && row.sendByMs <= now)
        ) {
          expired.push(row);
          continue;
        }
        m.inFlight++;
        n++;
        send.push(row);
      }
      if (n > 0) {
        // Idle for long: the next rows start a new observation (the old one has decayed away).
        if (now - m.rateAt > 5 * RATE_TAU_MS) m.rateSince = null;
        m.rate = m.rate * Math.exp(-Math.max(0, now - m.rateAt) / RATE_TAU_MS) + n / RATE_TAU_MS;
        m.rateAt = now;
        m.rateSince ??= now;
      }
    }
    return { send, expired };
  }

  /**
   * An attempt of the model is over, after `durationMs` (0 when unknown): its slot is free. Returns
   * true when the daemon should rebalance soon: it is above its fair share while others want slots
   * (budget.ts), so the freed slot goes back to them.
   */
  finished(model: string, durationMs = 0): boolean {
    const m = this.models.get(model);
    if (!m) return false;
    m.inFlight = Math.max(0, m.inFlight - 1);
    const d = Number.isFinite(durationMs) ? Math.max(0, durationMs) : 0;
    m.attemptMs = m.attemptMs === null ? d : 0.9 * m.attemptMs + 0.1 * d;
    const b = m.budget;
    return b !== null && b.peers > 0 && b.slots > b.target && b.slots > m.inFlight;
  }

  /**
   * Takes queued rows out, to be handed back (never sent): every row when `which` is 'all' (stop),
   * else the rows of the given batches (cancelled or past their deadline).
   */
  release(which: 'all' | ReadonlySet<string>): T[] {
    const out: T[] = [];
    for (const m of this.models.values()) {
      if (which === 'all') {
        out.push(...m.queue);
        m.queue = [];
      } else if (m.queue.some((r) => which.has(r.batchId))) {
        out.push(...m.queue.filter((r) => which.has(r.batchId)));
        m.queue = m.queue.filter((r) => !which.has(r.batchId));
      }
    }
    return out;
  }

  /** No more claims: stop() hands back the queue with release('all'). */
  stop(): void {
    this.stopping = true;
  }

  /**
   * The rebalance's input per model (budget.ts rebalanceSql): `used`, the slots this daemon cannot
   * give back (rows in flight), and `wanted`, its demand (in flight, held and, while it has work, the
   * limiter's appetite more). From here until applyBudgets(), or rebalanceFailed() before its COMMIT
   * went out, no model's in-flight count rises above the `used` reported (`frozen`).
   */
  budgetRequest(): { model: string; wanted: number; used: number }[] {
    const out: { model: string; wanted: number; used: number }[] = [];
    for (const [name, m] of this.models) {
      m.frozen = m.inFlight;
      const held = m.inFlight + m.queue.length + m.claiming;
      // The limiter's appetite, within the concurrency cap (adaptive concurrency).
      const cap = (this.hooks.concurrencyCap?.(name) ?? Number.POSITIVE_INFINITY) - held;
      const want = this.hooks.want?.(name, m.inFlight) ?? this.o.maxClaim;
      const more = m.hasWork && !this.stopping ? Math.min(want, cap) : 0;
      out.push({ model: name, wanted: held + Math.max(0, Math.floor(more)), used: m.inFlight });
    }
    return out;
  }

  /**
   * The rebalance's result. A model without a row has no slots. Models with nothing held, no work
   * and no slots are forgotten.
   */
  applyBudgets(budgets: readonly Budget[]): void {
    const seen = new Map(budgets.map((b) => [b.model, b]));
    for (const [name, m] of this.models) {
      const b = seen.get(name);
      m.budget = b ? { ...b } : null;
      m.frozen = null;
      if (
        !b?.slots &&
        !m.hasWork &&
        m.inFlight === 0 &&
        m.queue.length === 0 &&
        m.claiming === 0 &&
        m.claims === 0
      ) {
        this.models.delete(name);
      }
    }
  }

  /**
   * The rebalance failed. Before its COMMIT was sent (`committed` false), nothing changed in the
   * database: the budgets stay as they were and sending is no longer held to `used`. Once the COMMIT
   * was sent (`committed` 'unknown': its reply lost, the connection dropped or the statement's
   * deadline passed meanwhile), the new budgets may have committed, possibly lower than those held
   * here and already counted by other daemons' rooms: each model stays held to the `used` it
   * reported, which both the old and the new row cover, until a later rebalance's result is applied.
   */
  rebalanceFailed(committed: false | 'unknown' = false): void {
    if (committed === 'unknown') return;
    for (const m of this.models.values()) m.frozen = null;
  }

  /**
   * The database holds no budget of this daemon any more (it was declared lost): nothing is sent or
   * claimed until the next rebalance's result is applied.
   */
  forgetBudgets(): void {
    for (const m of this.models.values()) m.budget = null;
  }

  /** A model's counts, for metrics, tests and the heartbeat. */
  counts(model: string): {
    inFlight: number;
    queued: number;
    claiming: number;
    share: number;
    hasWork: boolean;
  } {
    const m = this.models.get(model);
    if (!m) return { inFlight: 0, queued: 0, claiming: 0, share: 0, hasWork: false };
    return {
      inFlight: m.inFlight,
      queued: m.queue.length,
      claiming: m.claiming,
      share: this.share(model, m),
      hasWork: m.hasWork,
    };
  }

  /**
   * Whether finalize (a count of all the batch's rows, ≈ 1,800 buffer hits at 20k) is worth running
   * for a batch with nothing in flight in this daemon: not while its model may still be claimed (a
   * claim of it runs, or none came back short since the last poke), so the batch likely has pending
   * rows; 76 such calls in one loaded 20k × 0 ms run all found the batch live. A batch held back is
   * remembered until its model runs dry (finalizeDue), or maintenance's sweep finds it ended
   * (another batch of the model keeps it claimable).
   */
  mayHaveEnded(batchId: string, model: string): boolean {
    const m = this.models.get(model);
    if (m === undefined || (!m.hasWork && m.claims === 0)) return true;
    this.heldBackEnds.set(batchId, model);
    return false;
  }

  /** The batches mayHaveEnded() held back whose model is in `dry` (claimed()'s answer), now forgotten. */
  finalizeDue(dry: readonly string[]): string[] {
    const due: string[] = [];
    for (const [batchId, model] of this.heldBackEnds) {
      if (!dry.includes(model)) continue;
      this.heldBackEnds.delete(batchId);
      due.push(batchId);
    }
    return due;
  }

  /** The budget a model had at the last rebalance (null: none). */
  budget(model: string): Budget | null {
    return this.models.get(model)?.budget ?? null;
  }

  /** Ids of queued rows (held by this daemon but not sent). */
  queuedIds(): string[] {
    const out: string[] = [];
    for (const m of this.models.values()) for (const r of m.queue) out.push(r.id);
    return out;
  }

  /** Batches of the queued rows. */
  queuedBatchIds(): string[] {
    const out = new Set<string>();
    for (const m of this.models.values()) for (const r of m.queue) out.add(r.batchId);
    return [...out];
  }

  /** Rows queued over all models. */
  get queued(): number {
    let n = 0;
    for (const m of this.models.values()) n += m.queue.length;
    return n;
  }

  /** Whether any model holds or may want slots (the shell keeps rebalancing while so). */
  get active(): boolean {
    return this.models.size > 0;
  }

  /** Every model has something pending again (poll, notification, reclaim, a retry falling due). */
  poke(): void {
    for (const m of this.models.values()) m.hasWork = true;
  }
}
