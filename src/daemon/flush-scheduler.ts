/**
 * When the daemon runs its hot statements: claims (claim.ts) and outcome writes (complete.ts), each
 * on its own pooled connection. Pure decisions over an injected clock (test/daemon/flush-scheduler
 * .test.ts drives it with a fake one); the shell (daemon.ts) runs what it is told.
 *
 *   claim   whenever the ledger has a claim to plan and fewer than maxClaims claims run.
 *   write   outcomes wait in memory (their slots are free already: a write is off the critical
 *           path) until writeBatch of them are waiting, or the oldest has waited writeDelayMs and
 *           no write runs; a full batch goes while fewer than maxWrites writes run. While one runs,
 *           the next batch gathers. At stop, at once.
 *   backoff after a failed statement, nothing starts until the backoff ends (100 ms doubling to
 *           5 s, jittered), so an outage is not hammered.
 */

/** The clock the scheduler reads and arms its one timer on. */
export interface Clock {
  now(): number;
  setTimer(ms: number, fn: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (ms, fn) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface FlushPolicy {
  /** Claim statements at once. */
  maxClaims: number;
  /** Write statements at once. */
  maxWrites: number;
  /** Waiting outcomes that start a write at once. */
  writeBatch: number;
  /** Longest an outcome waits for others to share its statement. */
  writeDelayMs: number;
}

/** What the scheduler sees of the daemon when it decides. */
export interface FlushState {
  claimsRunning: number;
  writesRunning: number;
  /** Outcomes waiting to be written, and when the oldest of them arrived (clock ms). */
  writesWaiting: number;
  oldestWaitingAt: number;
  /** The ledger would plan a claim now. */
  claimWanted: boolean;
  stopping: boolean;
}

export interface FlushDecision {
  claim: boolean;
  write: boolean;
  /** Decide again at this time (clock ms) even if nothing happens meanwhile; null: no need. */
  wakeAt: number | null;
}

/** The decision itself: pure. */
export function decideFlush(
  policy: FlushPolicy,
  s: FlushState,
  now: number,
  backoffUntil: number,
): FlushDecision {
  if (now < backoffUntil) return { claim: false, write: false, wakeAt: backoffUntil };
  const claim = s.claimWanted && !s.stopping && s.claimsRunning < policy.maxClaims;
  let write = false;
  let wakeAt: number | null = null;
  if (s.writesWaiting > 0 && s.writesRunning < policy.maxWrites) {
    const due = s.oldestWaitingAt + policy.writeDelayMs;
    if (s.stopping || s.writesWaiting >= policy.writeBatch) write = true;
    // A partial batch goes after the delay only when no write runs: while one runs, it gathers
    // until that write ends (whose end decides again) or it fills. Each write statement costs
    // PostgreSQL ≈ 0.5 ms of CPU besides its rows (commit included): 20k × 0 ms at 64 in flight,
    // 469 → 423 writes a run (medians of 3 alternating runs at load 10–14; docs/decisions/
    // pipe-profile-20k.md, third pass).
    else if (s.writesRunning > 0) wakeAt = null;
    else if (now >= due) write = true;
    else wakeAt = due;
  }
  return { claim, write, wakeAt };
}

/**
 * Runs decideFlush whenever asked (kick), and once more at its wakeAt. `state()` reads the daemon;
 * `start` starts the statements decided (it must update what state() reports before returning).
 */
export class FlushScheduler {
  private timer: unknown = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private backoffMs = 0;
  private backoffUntil = 0;

  constructor(
    private readonly policy: FlushPolicy,
    private readonly clock: Clock,
    private readonly state: () => FlushState,
    private readonly start: (what: 'claim' | 'write') => void,
    private readonly random: () => number = Math.random,
  ) {}

  /** Decides now: starts what may start (repeatedly, while something starts), arms the wake-up. */
  kick(): void {
    for (let guard = 0; guard < 64; guard++) {
      const d = decideFlush(this.policy, this.state(), this.clock.now(), this.backoffUntil);
      if (d.claim) this.start('claim');
      if (d.write) this.start('write');
      if (!d.claim && !d.write) {
        this.arm(d.wakeAt);
        return;
      }
    }
  }

  private arm(at: number | null): void {
    if (at === null || at >= this.timerAt) return;
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timerAt = at;
    this.timer = this.clock.setTimer(Math.max(0, at - this.clock.now()), () => {
      this.timer = null;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.kick();
    });
  }

  /** A statement succeeded: no backoff. */
  succeeded(): void {
    this.backoffMs = 0;
  }

  /** A statement failed: back off (100 ms doubling to 5 s, jittered to 50–100%); returns the ms. */
  failed(): number {
    this.backoffMs = Math.min(5000, Math.max(100, this.backoffMs * 2));
    const wait = this.backoffMs * (0.5 + this.random() / 2);
    this.backoffUntil = this.clock.now() + wait;
    this.arm(this.backoffUntil);
    return this.backoffMs;
  }

  /** Current backoff step (0: none). */
  get backoff(): number {
    return this.backoffMs;
  }

  stop(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
  }
}
