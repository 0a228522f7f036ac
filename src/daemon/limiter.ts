import type { Limiter } from '../dispatch/interfaces.js';

/** The default limiter: asks for up to claimBatchSize rows of a model per claim. */
export class ClaimBatchLimiter implements Limiter {
  constructor(private readonly claimBatchSize: number) {}
  want(_model: string, _localInFlight: number): number {
    return this.claimBatchSize;
  }
  onOutcome(): void {}
}
