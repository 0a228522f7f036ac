/**
 * How many more requests of a model this daemon wants per claim. The global ceiling is the
 * model_limits row, shared between daemons as slot budgets (src/store/sql/budget.ts) and enforced
 * by each claim against the daemon's budget row; the limiter only shapes one daemon's appetite
 * below it: `want` caps each claim, and what a daemon asks of the budget (in use + want), so an
 * adaptive limiter that wants less also leaves the slots to other daemons. The default asks for up
 * to claimBatchSize per claim. Adaptive 429 concurrency and RPM/TPM budgets plug in here later
 * (onOutcome sees every attempt). A limiter that throws is logged: `want` then counts as 0 (nothing
 * claimed for the model), a throwing `onOutcome` is ignored.
 */
export interface Limiter {
  /** Rows of `model` to ask for in the next claim (0 = none), given this daemon's in-flight count. */
  want(model: string, localInFlight: number): number;
  /** Called after every attempt; `throttled` is a 429/529 answer. */
  onOutcome(model: string, outcome: { throttled: boolean; latencyMs: number }): void;
}

export class ClaimBatchLimiter implements Limiter {
  constructor(private readonly claimBatchSize: number) {}
  want(_model: string, _localInFlight: number): number {
    return this.claimBatchSize;
  }
  onOutcome(): void {}
}
