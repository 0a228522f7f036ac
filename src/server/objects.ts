import type { BatchLifecycleStatus } from '../domain/batch-lifecycle.js';
import type { BatchInfo, BatchStatus, BatchUpstream, FileInfo } from '../domain/types.js';
import { NO_DAEMON_FOR_UPSTREAM, waitingMessage } from '../domain/upstream-route.js';
import type { ModelPrice } from '../domain/usage.js';
import { batchId, fileId } from './ids.js';
import { type ModelUsageObject, type UsageObject, usageFields } from './usage-object.js';

/** The OpenAI Batch API's wire objects, built from the store's records. */

const seconds = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);

export interface FileObject {
  id: string;
  object: 'file';
  bytes: number;
  created_at: number;
  expires_at: number | null;
  filename: string;
  purpose: string;
  status: 'processed';
  status_details: null;
}

export function fileObject(file: FileInfo, bytes: number): FileObject {
  return {
    id: fileId(file.id),
    object: 'file',
    bytes,
    created_at: seconds(file.createdAt)!,
    expires_at: seconds(file.expiresAt),
    filename: file.name,
    purpose: file.purpose,
    status: 'processed',
    status_details: null,
  };
}

/** The OpenAI Batch object; times are Unix seconds. */
export interface BatchObject {
  id: string;
  object: 'batch';
  endpoint: string;
  errors: { object: 'list'; data: NonNullable<BatchInfo['errors']> } | null;
  input_file_id: string;
  completion_window: string;
  status: BatchLifecycleStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  /** Null for a batch without a deadline. */
  expires_at: number | null;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
  usage: UsageObject;
  /** fusillade: usage per model, each with its cost (usage-object.ts). */
  model_usage: ModelUsageObject[];
  /** fusillade: the batch's cost from the server's price table; null when no model has a price. */
  cost: number | null;
  /** fusillade: where the requests go (never a key: its fingerprint at most). */
  upstreams: {
    upstream: string;
    credential: string;
    key_fingerprint: string | null;
    models: string[];
    daemons: number;
    waiting: boolean;
  }[];
}

/**
 * The batch object. Beyond OpenAI's fields, `upstreams` says where its requests go (no key: its
 * fingerprint at most), and `errors` gains `no_daemon_for_upstream` while requests wait because no
 * live daemon can send them (the batch stays in_progress: they are sent once one can).
 */
export function batchObject(
  batch: BatchInfo,
  status: BatchStatus,
  upstreams: BatchUpstream[] = [],
  prices: Readonly<Record<string, ModelPrice>> = {},
): BatchObject {
  const errors = [
    ...(batch.errors ?? []),
    ...upstreams
      .filter((u) => u.waiting)
      .map((u) => ({ code: NO_DAEMON_FOR_UPSTREAM, message: waitingMessage(u), param: null, line: null })),
  ];
  return {
    id: batchId(batch.id),
    object: 'batch',
    endpoint: batch.endpoint,
    errors: errors.length > 0 ? { object: 'list', data: errors } : null,
    input_file_id: fileId(batch.fileId),
    // A batch without a deadline (library-made: the API always takes a window) reads "none".
    completion_window: batch.completionWindow ?? 'none',
    status: batch.status,
    output_file_id: batch.outputFileId ? fileId(batch.outputFileId) : null,
    error_file_id: batch.errorFileId ? fileId(batch.errorFileId) : null,
    created_at: seconds(batch.createdAt)!,
    in_progress_at: seconds(batch.inProgressAt),
    expires_at: seconds(batch.expiresAt),
    finalizing_at: seconds(batch.finalizingAt),
    completed_at: seconds(batch.completedAt),
    failed_at: seconds(batch.failedAt),
    expired_at: seconds(batch.expiredAt),
    cancelling_at: seconds(batch.cancellingAt),
    cancelled_at: seconds(batch.cancelledAt),
    request_counts: {
      total: status.totalRequests,
      completed: status.completedRequests,
      // Canceled and expired requests land in the error file: count them as failed, as OpenAI does.
      failed: status.failedRequests + status.canceledRequests,
    },
    metadata: batch.metadata ?? null,
    ...usageFields(status.usage, status.usageByModel, prices),
    upstreams: upstreams.map((u) => ({
      upstream: u.upstream,
      credential: u.credential,
      key_fingerprint: u.keyFingerprint,
      models: u.models,
      daemons: u.daemons,
      waiting: u.waiting,
    })),
  };
}
