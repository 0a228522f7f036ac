import { ValidationError } from './errors.js';

/**
 * The checks of the limits set on a model for every daemon (the manager's setModelConcurrency and
 * setModelRateLimits): a ValidationError naming the first bad argument, before anything is written.
 */

function checkModel(model: unknown): void {
  if (typeof model !== 'string' || model === '') {
    throw new ValidationError([
      { code: 'invalid_model', param: 'model', message: 'model must be a non-empty string' },
    ]);
  }
}

/** A model's in-flight limit: an integer from 0 (paused) to 1,000,000. */
export function checkModelConcurrency(model: unknown, concurrency: unknown): void {
  checkModel(model);
  if (!Number.isInteger(concurrency) || (concurrency as number) < 0 || (concurrency as number) > 1_000_000) {
    throw new ValidationError([
      {
        code: 'invalid_concurrency',
        param: 'concurrency',
        message: 'concurrency must be an integer from 0 to 1000000',
      },
    ]);
  }
}

/** A model's requests and tokens per minute: each left out, null (removed) or an integer from 1 to 2e9. */
export function checkModelRateLimits(
  model: unknown,
  limits: { rpm?: number | null; tpm?: number | null } | undefined,
): void {
  checkModel(model);
  for (const key of ['rpm', 'tpm'] as const) {
    const v = limits?.[key];
    if (v !== undefined && v !== null && (!Number.isInteger(v) || v < 1 || v > 2_000_000_000)) {
      throw new ValidationError([
        { code: `invalid_${key}`, param: key, message: `${key} must be an integer from 1 to 2000000000` },
      ]);
    }
  }
}
