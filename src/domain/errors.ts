/**
 * Typed errors of the library. Every error fusillade raises on purpose is a FusilladeError with a
 * stable `code`, so callers (and the API server, which maps them to HTTP statuses) can branch on it.
 */
export type FusilladeErrorCode = 'not_found' | 'validation_failed' | 'invalid_state' | 'conflict';

export class FusilladeError extends Error {
  readonly code: FusilladeErrorCode;
  constructor(code: FusilladeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FusilladeError';
    this.code = code;
  }
}

/** An id that does not exist, was deleted, or belongs to another owner. */
export class NotFoundError extends FusilladeError {
  readonly kind: 'file' | 'batch' | 'request' | 'api_key' | 'webhook_endpoint';
  readonly id: string;
  constructor(kind: NotFoundError['kind'], id: string) {
    super('not_found', `${kind} ${id} not found`);
    this.name = 'NotFoundError';
    this.kind = kind;
    this.id = id;
  }
}

/** One problem with one input item. `index` is 0-based; `line` is 1-based when the input was JSONL. */
export interface ValidationIssue {
  code: string;
  message: string;
  index?: number;
  line?: number;
  param?: string;
}

/** Input that was refused as a whole: nothing of it was stored. */
export class ValidationError extends FusilladeError {
  readonly issues: ValidationIssue[];
  constructor(issues: ValidationIssue[]) {
    const first = issues[0];
    const where =
      first?.line !== undefined
        ? `line ${first.line}: `
        : first?.index !== undefined
          ? `template ${first.index}: `
          : '';
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    super('validation_failed', `${where}${first?.message ?? 'invalid input'}${more}`);
    this.name = 'ValidationError';
    this.issues = issues;
  }
  /** Index of the first bad template (0-based), if known. */
  get index(): number | undefined {
    return this.issues[0]?.index;
  }
  /** Line of the first bad input line (1-based), if known. */
  get line(): number | undefined {
    return this.issues[0]?.line;
  }
}

/** The operation is not allowed in the object's current state (e.g. cancelling a finished batch). */
export class InvalidStateError extends FusilladeError {
  /**
   * Which state stood in the way, when a caller may act on it: `batch_ended` for a retry that
   * would reopen an ended batch without `reopen: true`.
   */
  readonly reason: 'batch_ended' | null;
  constructor(message: string, options: { reason?: 'batch_ended' } = {}) {
    super('invalid_state', message);
    this.name = 'InvalidStateError';
    this.reason = options.reason ?? null;
  }
}

/** A conflicting write, such as an idempotency key reused with different parameters. */
export class ConflictError extends FusilladeError {
  constructor(message: string) {
    super('conflict', message);
    this.name = 'ConflictError';
  }
}

/**
 * createBatch with an idempotency key an earlier batch of the same owner was created with, but with
 * other parameters: a mistake to report, not a race to retry (the first batch stands).
 */
export class IdempotencyKeyReusedError extends ConflictError {
  constructor(
    readonly idempotencyKey: string,
    /** The batch the key was first used for. */
    readonly batchId: string,
    /** The parameters that differ from that batch's: fileId, endpoint, completionWindow, metadata. */
    readonly differs: readonly ('fileId' | 'endpoint' | 'completionWindow' | 'metadata')[],
  ) {
    super(
      `idempotency key ${JSON.stringify(idempotencyKey)} was already used for batch ${batchId} with another ${differs.join(', ')}`,
    );
    this.name = 'IdempotencyKeyReusedError';
  }
}
