import {
  anthropicErrorType,
  type MessageBatchCounts,
  messageBatchCounts,
  type ProcessingStatus,
  processingStatus,
} from '../domain/message-batch.js';
import type { BatchInfo, BatchStatus } from '../domain/types.js';
import type { ApiError } from './http.js';
import { messageBatchId } from './ids.js';

/**
 * The wire schema of Anthropic's Message Batches API (as Anthropic documents it), in one place: the objects the
 * /v1/messages/batches routes answer with and the error envelope of every answer under /v1/messages.
 * Times are RFC 3339.
 */

/** The message_batch object. */
export interface MessageBatchObject {
  id: string;
  type: 'message_batch';
  processing_status: ProcessingStatus;
  request_counts: MessageBatchCounts;
  created_at: string;
  /** 24 h after creation (a batch made by the library without a deadline: null). */
  expires_at: string | null;
  ended_at: string | null;
  cancel_initiated_at: string | null;
  archived_at: string | null;
  /** Where the results are, once the batch has ended; null before. */
  results_url: string | null;
}

export interface DeletedMessageBatchObject {
  id: string;
  type: 'message_batch_deleted';
}

/** A page of the list, with Anthropic's cursors. */
export interface MessageBatchPage {
  data: MessageBatchObject[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}

/** One line of the results JSONL (built by PostgreSQL: src/db/sql/results/message-batch-results.ts). */
export interface MessageBatchResultLine {
  custom_id: string;
  result:
    | { type: 'succeeded'; message: unknown }
    | { type: 'errored'; error: AnthropicErrorEnvelope }
    | { type: 'canceled' }
    | { type: 'expired' };
}

/** Anthropic's error envelope. */
export interface AnthropicErrorEnvelope {
  type: 'error';
  error: { type: string; message: string };
  request_id: string | null;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

/** `resultsBase`: the absolute URL the client reaches this server by (no trailing slash). */
export function messageBatchObject(
  batch: BatchInfo,
  status: BatchStatus,
  resultsBase: string,
): MessageBatchObject {
  const id = messageBatchId(batch.id);
  const ended = batch.finishedAt !== null;
  return {
    id,
    type: 'message_batch',
    processing_status: processingStatus(batch),
    request_counts: messageBatchCounts(batch, status),
    created_at: iso(batch.createdAt)!,
    expires_at: iso(batch.expiresAt),
    ended_at: iso(batch.finishedAt),
    cancel_initiated_at: iso(batch.cancellingAt),
    archived_at: null,
    results_url: ended ? `${resultsBase}/v1/messages/batches/${id}/results` : null,
  };
}

/** An API error in Anthropic's envelope; the type follows the status (as Anthropic's do). */
export function anthropicError(err: ApiError, requestId: string): AnthropicErrorEnvelope {
  return {
    type: 'error',
    error: { type: anthropicErrorType(err.status), message: err.message },
    request_id: requestId,
  };
}
