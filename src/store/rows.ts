import { batchLifecycleStatus } from '../domain/batch-lifecycle.js';
import { storedBody } from '../domain/body-codec.js';
import { NotFoundError } from '../domain/errors.js';
import { upstreamErrorMessage } from '../domain/retry.js';
import type { BatchInfo, FileInfo, FilePurpose, RequestRecord, RequestState } from '../domain/types.js';

/** Row shapes as pg returns them, and their mapping to the public types. */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Ids are UUIDs; anything else cannot exist, so it is a not-found, not a database error. */
export function assertId(kind: NotFoundError['kind'], id: string): string {
  if (typeof id !== 'string' || !UUID.test(id)) throw new NotFoundError(kind, String(id));
  return id.toLowerCase();
}

export function isUuid(id: string): boolean {
  return typeof id === 'string' && UUID.test(id);
}

export interface FileRow {
  id: string;
  name: string;
  description: string | null;
  purpose: FilePurpose;
  size_bytes: string;
  template_count: number;
  owner: string | null;
  source_batch_id: string | null;
  expires_at: Date | null;
  created_at: Date;
}

export const FILE_COLUMNS =
  'id, name, description, purpose, size_bytes, template_count, owner, source_batch_id, expires_at, created_at';

export function toFileInfo(r: FileRow): FileInfo {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    purpose: r.purpose,
    sizeBytes: Number(r.size_bytes),
    templateCount: r.template_count,
    owner: r.owner,
    sourceBatchId: r.source_batch_id,
    expiresAt: r.expires_at,
    createdAt: r.created_at,
  };
}

export interface BatchRow {
  id: string;
  file_id: string;
  owner: string | null;
  endpoint: string;
  completion_window: string | null;
  metadata: Record<string, string> | null;
  errors: BatchInfo['errors'];
  total_requests: number;
  created_at: Date;
  in_progress_at: Date | null;
  expires_at: Date | null;
  finalizing_at: Date | null;
  completed_at: Date | null;
  failed_at: Date | null;
  expired_at: Date | null;
  cancelling_at: Date | null;
  cancelled_at: Date | null;
  finished_at: Date | null;
  completed_count: number | null;
  failed_count: number | null;
  canceled_count: number | null;
  input_tokens: string | null;
  cached_tokens: string | null;
  output_tokens: string | null;
  reasoning_tokens: string | null;
  total_tokens: string | null;
  output_file_id: string | null;
  error_file_id: string | null;
  retried_count: number;
}

export const BATCH_COLUMNS = `id, file_id, owner, endpoint, completion_window, metadata, errors, total_requests,
  created_at, in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
  cancelled_at, finished_at, completed_count, failed_count, canceled_count, input_tokens, cached_tokens,
  output_tokens, reasoning_tokens, total_tokens, output_file_id, error_file_id, retried_count`;

export function toBatchInfo(r: BatchRow, now = new Date()): BatchInfo {
  return {
    id: r.id,
    fileId: r.file_id,
    owner: r.owner,
    endpoint: r.endpoint,
    completionWindow: r.completion_window,
    metadata: r.metadata,
    errors: r.errors,
    status: batchLifecycleStatus(
      {
        finalizingAt: r.finalizing_at,
        completedAt: r.completed_at,
        expiredAt: r.expired_at,
        cancellingAt: r.cancelling_at,
        cancelledAt: r.cancelled_at,
        expiresAt: r.expires_at,
      },
      now,
    ),
    totalRequests: r.total_requests,
    createdAt: r.created_at,
    inProgressAt: r.in_progress_at,
    expiresAt: r.expires_at,
    finalizingAt: r.finalizing_at,
    completedAt: r.completed_at,
    failedAt: r.failed_at,
    expiredAt: r.expired_at,
    cancellingAt: r.cancelling_at,
    cancelledAt: r.cancelled_at,
    finishedAt: r.finished_at,
    outputFileId: r.output_file_id,
    errorFileId: r.error_file_id,
    retriedRequests: r.retried_count,
  };
}

export interface RequestRow {
  id: string;
  batch_id: string;
  template_id: string;
  custom_id: string | null;
  line_number: number;
  model: string;
  state: RequestState;
  effective_state: RequestState;
  effective_error_code: string | null;
  attempt: number;
  not_before: Date | null;
  daemon_id: string | null;
  claimed_at: Date | null;
  lease_expires_at: Date | null;
  started_at: Date | null;
  completed_at: Date | null;
  response_status: number | null;
  response_body: string | null;
  /** The answer compressed (migration 0022); response_body is then ''. */
  response_body_z: Buffer | null;
  upstream_request_id: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Date;
}

export const REQUEST_COLUMNS = `r.id, r.batch_id, r.template_id, t.custom_id, r.line_number, r.model, r.state,
  r.effective_state, r.effective_error_code, r.attempt, r.not_before, r.daemon_id, r.claimed_at,
  r.lease_expires_at, r.started_at, r.completed_at, r.response_status, r.response_body, r.response_body_z,
  r.upstream_request_id, r.error_code, r.error_message, r.created_at`;

const EFFECTIVE_MESSAGES: Record<string, string> = {
  batch_cancelled: 'The batch was cancelled before this request was sent.',
  batch_expired: 'This request could not be executed before the completion window expired.',
};

export function toRequestRecord(r: RequestRow): RequestRecord {
  const base = {
    id: r.id,
    batchId: r.batch_id,
    templateId: r.template_id,
    customId: r.custom_id,
    lineNumber: r.line_number,
    model: r.model,
    attempt: r.attempt,
    createdAt: r.created_at,
  };
  const error = () => {
    const code =
      r.effective_error_code ??
      r.error_code ??
      (r.response_status ? `http_${r.response_status}` : 'unknown_error');
    // A pending row of a cancelled or expired batch reads as canceled: its last attempt's error is
    // not the reason.
    const overridden = r.effective_error_code !== null && r.effective_error_code !== r.error_code;
    const stored = overridden
      ? (EFFECTIVE_MESSAGES[code] ?? code)
      : (r.error_message ?? EFFECTIVE_MESSAGES[code]);
    if (stored !== undefined) return { code, message: stored };
    // A final HTTP failure stores its status and body only: the message is the upstream's own.
    if (r.response_status !== null && r.response_body !== null) {
      return { code, message: upstreamErrorMessage(r.response_status, r.response_body) };
    }
    return { code, message: EFFECTIVE_MESSAGES[code] ?? code };
  };
  switch (r.effective_state) {
    case 'pending':
      return {
        ...base,
        state: 'pending',
        notBefore: r.not_before,
        lastError: r.error_code ? { code: r.error_code, message: r.error_message ?? r.error_code } : null,
      };
    case 'claimed':
      return {
        ...base,
        state: 'claimed',
        daemonId: r.daemon_id!,
        claimedAt: r.claimed_at!,
        leaseExpiresAt: r.lease_expires_at!,
      };
    case 'processing':
      return {
        ...base,
        state: 'processing',
        daemonId: r.daemon_id!,
        claimedAt: r.claimed_at!,
        startedAt: r.started_at!,
        leaseExpiresAt: r.lease_expires_at!,
      };
    case 'completed':
      return {
        ...base,
        state: 'completed',
        startedAt: r.started_at,
        completedAt: r.completed_at!,
        responseStatus: r.response_status!,
        responseBody: storedBody(r.response_body, r.response_body_z)!,
        upstreamRequestId: r.upstream_request_id,
      };
    case 'failed':
      return {
        ...base,
        state: 'failed',
        startedAt: r.started_at,
        completedAt: r.completed_at!,
        responseStatus: r.response_status,
        responseBody: r.response_body,
        error: error(),
      };
    case 'canceled':
      return { ...base, state: 'canceled', completedAt: r.completed_at, error: error() };
  }
}
