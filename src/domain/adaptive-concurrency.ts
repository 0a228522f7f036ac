/**
 * Adaptive concurrency per model (optional; issue 11): additive increase while the upstream is
 * healthy, multiplicative decrease on overload (429, 503, 529, timeouts), never above the
 * configured limit nor below `min`. A pure state machine; each daemon runs one per adaptive model
 * and asks for no more than `limit` requests in flight (the global slot budget stays the ceiling).
 *
 *            ok, in use ≥ limit / 2              overload, ≥ cooldown since last decrease
 *   limit ──────────────────────────▶ +1/limit ─┐   limit ──────────────────────────────▶ ⌊limit × factor⌋
 *     ▲                   (+1 per window of `limit` successes)                 (one decrease per congestion event)
 *     └───────────────────────────────────────────┘
 *
 * As Netflix concurrency-limits' AIMD: decrease ×0.9 on a drop; increase only while
 * at least half the limit is in use (an idle limit proves nothing). Increase is +1 per `limit`
 * successes (one step per round of requests, as TCP's congestion avoidance) rather than +1 per
 * success, so a 1,000-slot limit does not grow by 1,000 in one round. Decreases are spaced by
 * `cooldownMs` (default: the last latency seen): the answers to one burst of overload arrive
 * together and are one signal, not many.
 */

export interface AimdOptions {
  /** The configured concurrency: the ceiling. */
  max: number;
  /** The floor (default 1). */
  min: number;
  /** Multiplicative decrease (default 0.9). */
  decreaseFactor: number;
}

export interface AimdState {
  /** Current limit (fractional: increases accumulate). */
  limit: number;
  /** Epoch ms of the last decrease. */
  lastDecreaseAt: number;
  /** The latest latency seen (ms): the cooldown between decreases. */
  latencyMs: number;
}

export type AimdSignal = 'ok' | 'overload' | 'neutral';

export function aimdStart(options: AimdOptions, initial: number = options.max): AimdState {
  return { limit: clamp(initial, options), lastDecreaseAt: Number.NEGATIVE_INFINITY, latencyMs: 0 };
}

/** The whole requests this limit allows in flight. */
export function aimdAllowed(state: AimdState): number {
  return Math.floor(state.limit);
}

/** What an attempt's outcome says about the upstream's health. */
export function aimdSignal(outcome: { status: number | null; timeout: boolean }): AimdSignal {
  if (outcome.timeout) return 'overload';
  const s = outcome.status;
  if (s === 429 || s === 503 || s === 529) return 'overload';
  if (s !== null && s >= 200 && s < 300) return 'ok';
  return 'neutral';
}

/** The state after one attempt finished; `inFlight` is what was in flight when it did (itself included). */
export function aimdUpdate(
  state: AimdState,
  signal: AimdSignal,
  inFlight: number,
  latencyMs: number,
  now: number,
  options: AimdOptions,
): AimdState {
  if (signal === 'neutral') return state;
  if (signal === 'overload') {
    const cooldown = Math.max(state.latencyMs, latencyMs);
    if (now - state.lastDecreaseAt < cooldown) return state;
    return {
      limit: clamp(Math.floor(state.limit * options.decreaseFactor), options),
      lastDecreaseAt: now,
      latencyMs,
    };
  }
  if (inFlight * 2 < state.limit) return state.latencyMs === latencyMs ? state : { ...state, latencyMs };
  return { ...state, limit: clamp(state.limit + 1 / Math.max(1, state.limit), options), latencyMs };
}

function clamp(limit: number, options: AimdOptions): number {
  const min = Math.max(1, options.min);
  return Math.min(Math.max(options.max, min), Math.max(min, limit));
}
