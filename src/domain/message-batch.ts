import { ValidationError } from './errors.js';
import type { BatchInfo, BatchStatus } from './types.js';

/**
 * Anthropic's Message Batches on fusillade's engine (as Anthropic's Message Batches API documents them):
 * a message batch is an ordinary batch whose endpoint is MESSAGES_PATH. This module holds the pure
 * rules: what a create body must be, and how a batch's lifecycle reads in Anthropic's terms.
 *
 *   fusillade batch                       processing_status   request_counts
 *   live, not cancelling                  in_progress         processing = total, the rest 0
 *   live, cancelling                      canceling           processing = total, the rest 0
 *   ended (completed/cancelled/expired)   ended               processing 0; succeeded = completed,
 *                                                             errored = failed, canceled or
 *                                                             expired = canceled (expired when the
 *                                                             batch ended expired)
 *
 * Anthropic keeps every count but processing at 0 until the batch ends; so does this.
 */

/** The upstream path of every message batch's requests, and the batch's endpoint. */
export const MESSAGES_PATH = '/v1/messages';

/** Sent upstream as anthropic-version: the version every Anthropic account accepts. */
export const UPSTREAM_ANTHROPIC_VERSION = '2023-06-01';

/** Anthropic's limits on one batch. */
export const MESSAGE_BATCH_LIMITS = { maxRequests: 100_000, maxBytes: 256 * 1024 * 1024 } as const;

/** A message batch lives at most this long (Anthropic: 24 hours). */
export const MESSAGE_BATCH_WINDOW = '24h';

const CUSTOM_ID = /^[a-zA-Z0-9_-]{1,64}$/;

/** One validated request of a create body. */
export interface MessageBatchRequest {
  customId: string;
  model: string;
  /** The params as JSON: the body sent to the upstream's /v1/messages. */
  body: string;
}

/** The message names the field (`requests.3.custom_id: …`), as Anthropic's do. */
function refuse(param: string, message: string): ValidationError {
  return new ValidationError([{ code: 'invalid_request_error', param, message: `${param}: ${message}` }]);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Checks one request `{ custom_id, params }` of a batch as Anthropic does before it accepts the
 * batch: custom_id 1–64 of [a-zA-Z0-9_-] and unique (`seen` holds the ids so far; this one is
 * added), params an object with model, max_tokens and messages, no streaming. The rest of params is
 * the upstream's to judge: a request it refuses ends `errored`, as at Anthropic. `i` is the
 * request's 0-based index; the ValidationError's message names the field (`requests.3.custom_id: …`).
 */
export function validateMessageBatchRequest(
  item: unknown,
  i: number,
  seen: Set<string>,
): MessageBatchRequest {
  const at = `requests.${i}`;
  if (!isObject(item)) throw refuse(at, 'must be an object with custom_id and params');
  const customId = item.custom_id;
  if (typeof customId !== 'string' || !CUSTOM_ID.test(customId)) {
    throw refuse(`${at}.custom_id`, "String should match pattern '^[a-zA-Z0-9_-]{1,64}$'");
  }
  if (seen.has(customId)) {
    throw refuse(
      `${at}.custom_id`,
      `duplicate custom_id ${JSON.stringify(customId)}: custom_id must be unique`,
    );
  }
  const params = item.params;
  if (!isObject(params))
    throw refuse(`${at}.params`, 'Field required (an object of Messages API parameters)');
  if (typeof params.model !== 'string' || params.model.trim() === '') {
    throw refuse(`${at}.params.model`, 'Field required (a model name)');
  }
  if (!Number.isInteger(params.max_tokens) || (params.max_tokens as number) < 1) {
    throw refuse(`${at}.params.max_tokens`, 'Field required (an integer of at least 1)');
  }
  if (!Array.isArray(params.messages)) throw refuse(`${at}.params.messages`, 'Field required (an array)');
  if (params.stream === true) throw refuse(`${at}.params.stream`, 'streaming is not supported in batches');
  seen.add(customId);
  return { customId, model: params.model, body: JSON.stringify(params) };
}

export type ProcessingStatus = 'in_progress' | 'canceling' | 'ended';

export interface MessageBatchCounts {
  processing: number;
  succeeded: number;
  errored: number;
  canceled: number;
  expired: number;
}

/** The batch's processing_status. */
export function processingStatus(batch: Pick<BatchInfo, 'finishedAt' | 'cancellingAt'>): ProcessingStatus {
  if (batch.finishedAt !== null) return 'ended';
  return batch.cancellingAt !== null ? 'canceling' : 'in_progress';
}

/** request_counts with Anthropic's semantics (see the table at the top). */
export function messageBatchCounts(
  batch: Pick<BatchInfo, 'finishedAt' | 'status' | 'totalRequests'>,
  status: Pick<BatchStatus, 'completedRequests' | 'failedRequests' | 'canceledRequests'>,
): MessageBatchCounts {
  if (batch.finishedAt === null) {
    return { processing: batch.totalRequests, succeeded: 0, errored: 0, canceled: 0, expired: 0 };
  }
  const expired = batch.status === 'expired';
  return {
    processing: 0,
    succeeded: status.completedRequests,
    errored: status.failedRequests,
    canceled: expired ? 0 : status.canceledRequests,
    expired: expired ? status.canceledRequests : 0,
  };
}

/** Anthropic's error types by HTTP status, for the API's envelope and for errored results. */
export const ANTHROPIC_ERROR_TYPES: ReadonlyArray<readonly [status: number, type: string]> = [
  [400, 'invalid_request_error'],
  [401, 'authentication_error'],
  [402, 'billing_error'],
  [403, 'permission_error'],
  [404, 'not_found_error'],
  [413, 'request_too_large'],
  [429, 'rate_limit_error'],
  [504, 'timeout_error'],
  [529, 'overloaded_error'],
];

/** The error type Anthropic gives a status: its own where it names one, else by class. */
export function anthropicErrorType(status: number): string {
  const named = ANTHROPIC_ERROR_TYPES.find(([s]) => s === status);
  if (named) return named[1];
  return status >= 500 ? 'api_error' : 'invalid_request_error';
}

/**
 * Adds the upstream credentials to a request's headers: Anthropic's Messages API (path
 * MESSAGES_PATH) takes the key in x-api-key with an anthropic-version; every other path takes
 * `Authorization: Bearer`. An empty key sends none.
 */
export function addUpstreamAuth(headers: Record<string, string>, path: string, apiKey: string | null): void {
  if (path === MESSAGES_PATH) {
    headers['anthropic-version'] = UPSTREAM_ANTHROPIC_VERSION;
    if (apiKey) headers['x-api-key'] = apiKey;
  } else if (apiKey) {
    headers.authorization = `Bearer ${apiKey}`;
  }
}
