/**
 * One daemon's share of a model's requests- and tokens-per-minute budget, as a pure state machine
 * (no I/O, no clock of its own): what the daemon may still start, what it asks of the global
 * bucket and gives back at each budget rebalance (src/db/sql/queue/rate-budget.ts), what a 429 does.
 * The daemon's shell owns one per model that has a rate limit (configured, or learned from the
 * upstream's headers) and calls these functions; docs/decisions/rate-limits.md has the design.
 *
 *   rebalance   returned = the wallet (positive: unspent; negative: a debt), the wallet is emptied;
 *               the database refills the model's bucket, takes the returned amount back and grants
 *               a fair share of what is in it; the grant is added to the wallet (claims that
 *               finished meanwhile have already adjusted it).
 *   plan        a claim of the model may take up to admissible() rows: none while paused, none
 *               while either wallet is empty, else as many as the tokens wallet covers at the
 *               model's average cost (at least one: the wallet may go negative by one request's
 *               estimate error, paid back from the next grant). reserve() takes them from the wallet.
 *   claimed     settle() swaps the reservation for the real estimates of the rows that came back.
 *   429         throttled(): paused until the upstream's hint, the wallet emptied (the upstream said
 *               there is nothing left); the shell writes the pause to the database for every daemon.
 *
 * Wallets hold requests and tokens separately; a limit that is not in force reads as unlimited.
 */

/** Per-model limits in the manager config: `modelRateLimits: { [model]: { rpm?, tpm? } }`. */
export interface ModelRateLimit {
  /** Requests per minute, across all daemons on the database. */
  rpm?: number;
  /** Tokens per minute (prompt + requested maximum output, as providers count at admission). */
  tpm?: number;
  /** Adapt this daemon's concurrency for the model (AIMD), never above its concurrency limit. */
  adaptiveConcurrency?: boolean;
}

export interface RateLimits {
  /** Requests per minute in force (configured, else learned), or null. */
  rpm: number | null;
  /** Tokens per minute in force, or null. */
  tpm: number | null;
}

export interface RateWallet {
  limits: RateLimits;
  /** Requests this daemon may still start (may be negative: a debt). */
  requests: number;
  /** Tokens this daemon may still spend (may be negative). */
  tokens: number;
  /** Epoch ms until which nothing of the model starts (0: not paused). */
  pausedUntil: number;
  /** Moving average of the estimated cost of this model's requests (tokens). */
  avgCost: number;
  /** Estimates seen (the first claim's rows set the average outright, not the initial guess). */
  samples: number;
}

/** Weight of a new estimate in the moving average of a model's request cost. */
const AVG_WEIGHT = 0.05;

export function newWallet(limits: RateLimits, initialCost: number): RateWallet {
  return { limits, requests: 0, tokens: 0, pausedUntil: 0, avgCost: Math.max(1, initialCost), samples: 0 };
}

/** Whether any limit is in force (else the wallet never limits, and need not be rebalanced). */
export function limited(w: RateWallet): boolean {
  return w.limits.rpm !== null || w.limits.tpm !== null;
}

/** Rows a claim may take now (Infinity when no limit is in force and nothing is paused). */
export function admissible(w: RateWallet, now: number): number {
  if (w.pausedUntil > now) return 0;
  let n = Number.POSITIVE_INFINITY;
  if (w.limits.rpm !== null) n = w.requests > 0 ? Math.max(1, Math.floor(w.requests)) : 0;
  if (w.limits.tpm !== null)
    n = Math.min(n, w.tokens > 0 ? Math.max(1, Math.floor(w.tokens / w.avgCost)) : 0);
  return n;
}

/** Takes `count` rows at the average cost from the wallet for a claim about to run. */
export function reserve(w: RateWallet, count: number): void {
  if (w.limits.rpm !== null) w.requests -= count;
  if (w.limits.tpm !== null) w.tokens -= count * w.avgCost;
}

/**
 * A claim of `reserved` rows (reserved at `reservedCost` each) came back with rows of these
 * estimated costs: gives back the reservation and charges the real estimates.
 */
export function settle(
  w: RateWallet,
  reserved: number,
  reservedCost: number,
  costs: readonly number[],
): void {
  if (w.limits.rpm !== null) w.requests += reserved - costs.length;
  if (w.limits.tpm !== null) {
    let sum = 0;
    for (const c of costs) sum += c;
    w.tokens += reserved * reservedCost - sum;
  }
  if (costs.length === 0) return;
  if (w.samples === 0) {
    let sum = 0;
    for (const c of costs) sum += c;
    w.avgCost = Math.max(1, sum / costs.length);
  } else for (const c of costs) w.avgCost += (c - w.avgCost) * AVG_WEIGHT;
  w.samples += costs.length;
}

/** What a rebalance hands back to the global bucket; the wallet is emptied until the grant comes. */
export function giveBack(w: RateWallet): { requests: number; tokens: number } {
  const back = { requests: w.requests, tokens: w.tokens };
  w.requests = 0;
  w.tokens = 0;
  return back;
}

/**
 * What the daemon asks for at a rebalance: enough for `rows` more requests (its demand until the
 * next rebalance), less what its wallet already holds. Asked whether or not a limit is known here
 * yet: the database grants nothing for a limit not in force, and the first lease after a limit
 * was learned already grants.
 */
export function demand(w: RateWallet, rows: number): { requests: number; tokens: number } {
  return {
    requests: Math.max(0, rows - w.requests),
    tokens: Math.max(0, rows * w.avgCost - w.tokens),
  };
}

/** The database's answer: the grant, the limits in force and the model's global pause. */
export function applyGrant(
  w: RateWallet,
  grant: { requests: number; tokens: number; limits: RateLimits; pausedUntil: number },
  now: number,
): void {
  w.limits = grant.limits;
  w.requests += grant.requests;
  w.tokens += grant.tokens;
  w.pausedUntil = Math.max(grant.pausedUntil, w.pausedUntil > now ? w.pausedUntil : 0);
}

/** A 429 with the upstream's hint: nothing of the model starts before `now + retryAfterMs`. */
export function throttled(w: RateWallet, retryAfterMs: number, now: number): void {
  w.pausedUntil = Math.max(w.pausedUntil, now + retryAfterMs);
  w.requests = Math.min(0, w.requests);
  w.tokens = Math.min(0, w.tokens);
}
