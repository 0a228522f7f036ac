import { parseCompletionWindow } from '../../domain/completion-window.js';
import { type IdempotencyKeyReusedError, ValidationError } from '../../domain/errors.js';
import type { CreateBatchOptions } from '../../domain/types.js';

/*
 * createBatch's options checked before anything is written, and the comparison of a repeated
 * Idempotency-Key's parameters with those of the batch the key first created.
 */

const METADATA_LIMITS = { pairs: 16, key: 64, value: 512 };

/** The default completion window of a batch (the manager's defaultCompletionWindow unless set). */
export const DEFAULT_COMPLETION_WINDOW = '24h';

/** A completion window in ms, or null for none; a ValidationError for anything else. */
export function completionWindowMs(window: string | null): number | null {
  if (window === null) return null;
  const ms = typeof window === 'string' ? parseCompletionWindow(window) : undefined;
  if (ms === undefined) {
    throw new ValidationError([
      {
        code: 'invalid_completion_window',
        param: 'completion_window',
        message: `invalid completion window ${JSON.stringify(window)} (e.g. "24h", "30m", "7d"; null for none)`,
      },
    ]);
  }
  return ms;
}

export function validateBatchOptions(options: CreateBatchOptions): number | null {
  const secs = options.outputExpiresAfterSeconds;
  if (secs !== undefined && secs !== null && !(Number.isInteger(secs) && secs >= 3600 && secs <= 2_592_000)) {
    throw new ValidationError([
      {
        code: 'invalid_output_expires_after',
        param: 'output_expires_after',
        message: 'output_expires_after must be between 3600 and 2592000 seconds',
      },
    ]);
  }
  const ms = completionWindowMs(
    options.completionWindow === undefined ? DEFAULT_COMPLETION_WINDOW : options.completionWindow,
  );
  if (options.coalesce !== undefined && typeof options.coalesce !== 'boolean') {
    throw new ValidationError([
      { code: 'invalid_coalesce', param: 'coalesce', message: 'coalesce must be true or false' },
    ]);
  }
  const md = options.metadata;
  if (md !== undefined && md !== null) {
    const entries = typeof md === 'object' && !Array.isArray(md) ? Object.entries(md) : null;
    const bad = (message: string) =>
      new ValidationError([{ code: 'invalid_metadata', param: 'metadata', message }]);
    if (!entries) throw bad('metadata must be an object of strings');
    if (entries.length > METADATA_LIMITS.pairs)
      throw bad(`metadata has more than ${METADATA_LIMITS.pairs} pairs`);
    for (const [k, v] of entries) {
      if (typeof v !== 'string') throw bad(`metadata value for ${JSON.stringify(k)} must be a string`);
      if (k.length > METADATA_LIMITS.key)
        throw bad(`metadata key longer than ${METADATA_LIMITS.key} characters`);
      if (v.length > METADATA_LIMITS.value)
        throw bad(`metadata value longer than ${METADATA_LIMITS.value} characters`);
    }
  }
  return ms;
}

/** The batch an idempotency key was first used for, as createBatch compares it. */
export interface FirstUse {
  id: string;
  file_id: string;
  endpoint: string;
  completion_window: string | null;
  metadata: Record<string, string> | null;
}

/** Which of createBatch's parameters differ from the batch the same key created (none: a repeat). */
export function differingParameters(
  first: FirstUse,
  fileId: string,
  options: CreateBatchOptions,
  windowMs: number | null,
): IdempotencyKeyReusedError['differs'][number][] {
  const window = windowMs === null ? null : (options.completionWindow ?? DEFAULT_COMPLETION_WINDOW);
  const canonical = (m: Record<string, string> | null | undefined) =>
    m == null || Object.keys(m).length === 0 ? null : JSON.stringify(Object.entries(m).sort());
  const differs: IdempotencyKeyReusedError['differs'][number][] = [];
  if (first.file_id !== fileId) differs.push('fileId');
  if (first.endpoint !== (options.endpoint ?? '')) differs.push('endpoint');
  if (first.completion_window !== window) differs.push('completionWindow');
  if (canonical(first.metadata) !== canonical(options.metadata)) differs.push('metadata');
  return differs;
}
