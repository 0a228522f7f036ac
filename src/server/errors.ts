import {
  ConflictError,
  IdempotencyKeyReusedError,
  InvalidStateError,
  NotFoundError,
  ValidationError,
} from '../domain/errors.js';
import { ApiError } from './http.js';
import { batchId } from './ids.js';

/** The API's names of createBatch's parameters. */
const API_PARAMS = {
  fileId: 'input_file_id',
  endpoint: 'endpoint',
  completionWindow: 'completion_window',
  metadata: 'metadata',
} as const;

/** Raised when the database does not answer within the server's deadline. */
export class DatabaseTimeoutError extends Error {
  constructor(ms: number) {
    super(`the database did not answer within ${ms} ms`);
    this.name = 'DatabaseTimeoutError';
  }
}

// Connection-level failures: refused, reset, dropped, server shutting down or out of slots.
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EPIPE',
  // A statement PostgreSQL cancelled at the server's deadline (statement_timeout).
  '57014',
  '57P01',
  '57P02',
  '57P03',
  '53300',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

/** `work`, or a DatabaseTimeoutError once `ms` have passed without its answer. */
export function withDatabaseDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DatabaseTimeoutError(ms)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

export function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof DatabaseTimeoutError) return true;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
  if (err instanceof AggregateError) return err.errors.some(isDatabaseUnavailable);
  return /Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed/i.test(
    err.message,
  );
}

/** PostgreSQL refused a string's characters: 22021 (e.g. a NUL byte) or 22P05 (untranslatable). */
function isUnstorableText(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '22021' || code === '22P05';
}

/**
 * Maps any error to the API's answer. `describe` turns a store NotFoundError into the message the
 * client should see (with the OpenAI id it asked for, not the internal UUID).
 */
export function toApiError(err: unknown, describe?: (e: NotFoundError) => string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof NotFoundError) {
    return new ApiError(404, describe ? describe(err) : `No such ${err.kind}.`, { code: 'not_found' });
  }
  if (err instanceof ValidationError) {
    const issue = err.issues[0];
    const extra: Record<string, unknown> = {};
    if (issue?.line !== undefined) extra.line = issue.line;
    const status = issue?.code === 'file_too_large' ? 413 : 400;
    return new ApiError(status, err.message, {
      code: issue?.code ?? 'invalid_request',
      param: issue?.param ?? null,
      extra,
    });
  }
  if (err instanceof InvalidStateError) {
    // 400, not 409: the openai client retries 409s.
    return new ApiError(400, err.message, { code: 'invalid_state' });
  }
  if (err instanceof IdempotencyKeyReusedError) {
    // 422 as the IETF Idempotency-Key draft says for a reused key with another payload; not 409,
    // which clients (openai's among them) treat as a race and retry.
    const params = err.differs.map((d) => API_PARAMS[d]);
    return new ApiError(
      422,
      `Idempotency-Key ${JSON.stringify(err.idempotencyKey)} was already used for ${batchId(err.batchId)} with a different ${params.join(', ')}. That batch is unchanged; send a new Idempotency-Key to create another batch.`,
      { code: 'idempotency_key_reused', param: params[0] ?? null },
    );
  }
  if (err instanceof ConflictError) return new ApiError(409, err.message, { code: 'conflict' });
  if (isUnstorableText(err)) {
    // A NUL (or another character PostgreSQL text cannot hold) in a client's string: its input.
    return new ApiError(400, 'The request contains a character that cannot be stored (such as \\u0000).', {
      code: 'invalid_character',
    });
  }
  if (isDatabaseUnavailable(err)) {
    return new ApiError(503, 'The database is unavailable; retry later.', {
      code: 'database_unavailable',
      headers: { 'retry-after': '1' },
    });
  }
  return new ApiError(500, 'Internal server error.', { code: 'internal_error' });
}
