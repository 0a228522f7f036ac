import type { BatchLifecycleStatus } from './batch-lifecycle.js';
import type { RequestState } from './request-state.js';
import type { ModelRouter } from './upstream-route.js';
import type { ModelUsage, UsageTotals } from './usage.js';

export type FilePurpose = 'batch' | 'batch_output' | 'batch_error';

export interface FileInfo {
  id: string;
  name: string;
  description: string | null;
  purpose: FilePurpose;
  sizeBytes: number;
  templateCount: number;
  owner: string | null;
  /** For output and error files: the batch whose results they hold. */
  sourceBatchId: string | null;
  expiresAt: Date | null;
  createdAt: Date;
}

export interface CreateFileOptions {
  owner?: string | null;
  purpose?: FilePurpose;
  /** Size of the original upload in bytes; defaults to the sum of the templates' bodies. */
  sizeBytes?: number;
  expiresAt?: Date | null;
}

export interface CreateBatchOptions {
  /**
   * OpenAI-style window such as "24h" or "30m"; sets expiresAt. null: no deadline (nothing of the
   * batch ever expires). Default: the manager's defaultCompletionWindow ("24h" unless configured).
   */
  completionWindow?: string | null;
  metadata?: Record<string, string> | null;
  owner?: string | null;
  /** The batch's OpenAI endpoint path (e.g. "/v1/chat/completions"), for display and validation. */
  endpoint?: string;
  /** With the same owner and key, a second create returns the first batch instead of a new one. */
  idempotencyKey?: string | null;
  /**
   * Seconds the batch's output and error files live from their creation (when the batch ends),
   * 3600 to 2592000 (OpenAI's output_expires_after); then the purge removes them and the requests.
   * Default: they live as long as the batch.
   */
  outputExpiresAfterSeconds?: number | null;
  /**
   * Where the requests go, decided now and recorded with each request (src/domain/upstream-route.ts):
   * for a model the router routes, its upstream and the fingerprint of its key; otherwise the
   * template's own endpoint and key. Default: the manager's `upstreamRouter`; null: every template's
   * own endpoint and key.
   */
  router?: ModelRouter | null;
  /** A model the router does not route is refused (ValidationError `unknown_model`) instead. */
  requireRoutes?: boolean;
  /**
   * Identical requests sent once (docs/decisions/0008): lines whose model, upstream, method, path
   * and JSON body are the same after canonical JSON are sent once, and the answer is copied to each
   * line (its own custom_id and request id). Request counts count lines; usage counts what was sent.
   * The API sets it from metadata `fusillade_coalesce: "true"`. Default false.
   */
  coalesce?: boolean;
}

export interface BatchInfo {
  id: string;
  fileId: string;
  owner: string | null;
  endpoint: string;
  /** Null: no deadline. */
  completionWindow: string | null;
  metadata: Record<string, string> | null;
  errors: { code: string; message: string; param: string | null; line: number | null }[] | null;
  status: BatchLifecycleStatus;
  totalRequests: number;
  createdAt: Date;
  inProgressAt: Date | null;
  /** Null: no deadline. */
  expiresAt: Date | null;
  finalizingAt: Date | null;
  completedAt: Date | null;
  /** Always null: a batch whose input is unusable is refused at creation (src/domain/batch-lifecycle.ts). */
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  finishedAt: Date | null;
  outputFileId: string | null;
  errorFileId: string | null;
  /** Requests put back to pending by retries over the batch's life (their failures stay in its history). */
  retriedRequests: number;
}

/** What retryFailedRequests requeues. */
export interface RetryOptions {
  /**
   * `retriable` requeues only failures a retry can fix (429 except insufficient quota, 408, 5xx,
   * 529, timeouts and connection errors); `all` (the default) every failed request.
   */
  only?: 'all' | 'retriable';
  /**
   * Whether an ended batch may be reopened (default true). With false, a retry that would reopen
   * one throws InvalidStateError with reason `batch_ended` and changes nothing.
   */
  reopen?: boolean;
}

/**
 * Where a batch's requests go, one entry per route (src/domain/upstream-route.ts), and whether a live
 * daemon can send them. Never a key: at most its fingerprint.
 */
export interface BatchUpstream {
  /** Base URL without credentials, or "mock" (the built-in mock of whichever daemon sends). */
  upstream: string;
  /**
   * What a sender needs: "none", "key" (the daemons' key of `keyFingerprint`), "template", "daemon",
   * or "template-sealed:<kid>" (the template's key, sealed: a daemon holding key-encryption key <kid>).
   */
  credential: string;
  /** "sha256:" + 16 hex digits of the key a daemon must hold (credential "key"), else null. */
  keyFingerprint: string | null;
  /** The batch's models routed here. */
  models: string[];
  /** Live daemons that can send these requests. */
  daemons: number;
  /** The batch is live, has requests pending here, and no live daemon can send them: they wait. */
  waiting: boolean;
}

/** A batch's progress. Computed from the requests while live, read from frozen counts once ended. */
export interface BatchStatus {
  batchId: string;
  fileId: string;
  status: BatchLifecycleStatus;
  totalRequests: number;
  pendingRequests: number;
  /** claimed + processing */
  inProgressRequests: number;
  completedRequests: number;
  failedRequests: number;
  canceledRequests: number;
  /** Summed from the completed requests' answers (src/domain/usage.ts); frozen once ended. */
  usage: UsageTotals;
  /** The same per model of the batch, ordered by model. */
  usageByModel: ModelUsage[];
  createdAt: Date;
  /** Null: no deadline. */
  expiresAt: Date | null;
  finishedAt: Date | null;
}

interface RequestBase {
  id: string;
  batchId: string;
  templateId: string;
  customId: string | null;
  lineNumber: number;
  model: string;
  attempt: number;
  createdAt: Date;
}

export type RequestRecord =
  | (RequestBase & { state: 'pending'; notBefore: Date | null; lastError: RequestError | null })
  | (RequestBase & { state: 'claimed'; daemonId: string; claimedAt: Date; leaseExpiresAt: Date })
  | (RequestBase & {
      state: 'processing';
      daemonId: string;
      claimedAt: Date;
      startedAt: Date;
      leaseExpiresAt: Date;
    })
  | (RequestBase & {
      state: 'completed';
      startedAt: Date | null;
      completedAt: Date;
      responseStatus: number;
      responseBody: string;
      upstreamRequestId: string | null;
    })
  | (RequestBase & {
      state: 'failed';
      startedAt: Date | null;
      completedAt: Date;
      responseStatus: number | null;
      responseBody: string | null;
      error: RequestError;
    })
  | (RequestBase & { state: 'canceled'; completedAt: Date | null; error: RequestError });

export interface RequestError {
  code: string;
  message: string;
}

export type { RequestState };

/** Keyset pagination: pass the last item's id as `after` to get the next page. */
export interface ListOptions {
  owner?: string | null;
  limit?: number;
  after?: string;
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
}

export interface ListRequestsOptions {
  /** Filter by (effective) state. */
  state?: RequestState;
  /** Only requests whose custom_id contains this text. */
  search?: string;
  /** Return requests after this line number. */
  afterLine?: number;
  limit?: number;
}
