/**
 * The dashboard's JSON on the wire: one type per answer of /api/dashboard/*. The server's
 * serializers (routes/dashboard-json.ts) return these types, and the dashboard's modules import them
 * in JSDoc (`@typedef {import('./dashboard-wire.js').DashboardBatch} …`), so
 * `npm run typecheck` checks both sides against one definition. Type-only: this module imports
 * nothing at run time, so the browser's type check never reaches Node's.
 * Times are Unix seconds, like the /v1 objects'.
 */
import type { BatchLifecycleStatus } from '../domain/batch-lifecycle.js';
import type { RequestState } from '../domain/request-state.js';
import type { BatchObject } from './objects.js';

/** The OpenAI error envelope every failed call answers. */
export interface ErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** GET /api/dashboard/me */
export interface Me {
  owner: string;
}

/** Requests of a batch by what a reader sees (pending rows of a cancelled batch count as canceled). */
export interface BatchCounts {
  total: number;
  pending: number;
  /** Claimed or being sent. */
  in_progress: number;
  completed: number;
  failed: number;
  canceled: number;
}

/** A batch as the dashboard lists it: the /v1 Batch object and its progress. */
export interface DashboardBatch extends BatchObject {
  counts: BatchCounts;
  /** Requests finished per second over the last minute while live; null once ended. */
  recent_rate: number | null;
  /** When it ended (completed, cancelled, expired or failed); null while live. */
  finished_at: number | null;
  /** Requests put back to pending by retries over its life; their failures stay in its history. */
  retried: number;
}

/** GET /api/dashboard/batches?status=&q=&after=&before=&limit= */
export interface BatchList {
  object: 'list';
  data: DashboardBatch[];
  first_id: string | null;
  last_id: string | null;
  /** Older batches exist (the next page: `after=last_id`). */
  has_more: boolean;
  /** Newer batches exist (the previous page: `before=first_id`). */
  has_newer: boolean;
  /** Batches matching the filters, counted up to 10,000 (`total_exact` false past it). */
  total: number;
  total_exact: boolean;
  /** Matching batches before this page (newer ones): the page shows rows offset+1 to offset+n. */
  offset: number;
}

/** GET /api/dashboard/batches/{id}/progress */
export interface BatchProgress extends DashboardBatch {
  /** Requests by state, for the requests filter. */
  state_counts: Record<RequestState, number>;
  /** Requests finished per time bucket; `failed` keeps failures a retry has since requeued. */
  throughput: { start: number; bucket_seconds: number; completed: number[]; failed: number[] };
}

export type RequestSort = 'line' | 'latency' | 'attempts';

/** One row of a batch's requests table (no bodies). */
export interface RequestRow {
  id: string;
  line: number;
  custom_id: string | null;
  model: string;
  state: RequestState;
  attempts: number;
  status_code: number | null;
  /** request_timeout, connection_error, batch_cancelled, batch_expired, … */
  error_code: string | null;
  latency_ms: number | null;
  completed_at: number | null;
}

/**
 * GET /api/dashboard/batches/{id}/requests?state=&code=&q=&sort=&order=&from_line=&before_line=
 * &offset=&limit=
 */
export interface RequestPage {
  object: 'list';
  data: RequestRow[];
  has_more: boolean;
  has_previous: boolean;
  /** Requests matching the filters. */
  total: number;
  /** Sorted by latency or attempts: rows before this page; null in line order. */
  offset: number | null;
}

/** A failed outcome a retry put back to pending. */
export interface PastFailure {
  attempt: number;
  started_at: number | null;
  failed_at: number;
  status_code: number | null;
  error_code: string | null;
  error_message: string | null;
  /** The first 4,000 characters of the upstream's answer. */
  response_body: string | null;
  retried_at: number;
}

/** GET /api/dashboard/batches/{id}/requests/{request_id} */
export interface RequestDetail extends RequestRow {
  method: string;
  path: string;
  body: string;
  response_body: string | null;
  error_message: string | null;
  upstream_request_id: string | null;
  created_at: number;
  started_at: number | null;
  not_before: number | null;
  /** Earlier failed outcomes, oldest first. */
  history: PastFailure[];
}

/** A failure code: an HTTP status ("429") or an error code ("request_timeout", "insufficient_quota"). */
export interface FailureCode {
  code: string;
  count: number;
  /** A retry could fix it (408, 429 but not out of quota, 5xx, 529, timeouts, connection errors). */
  retriable: boolean;
}

/** GET /api/dashboard/batches/{id}/failures */
export interface FailureSummary {
  /** Requests failed now. */
  failed: number;
  retriable: number;
  /** Most frequent first. */
  codes: FailureCode[];
  /** Requests retried so far over the batch's life. */
  retried: number;
}

/** POST /api/dashboard/batches/{id}/retry with this body. */
export interface RetryBody {
  /** Default `all`. */
  only?: 'all' | 'retriable';
  /** Must be true to retry requests of a batch that has ended (409 `reopen_required` otherwise). */
  reopen?: boolean;
}

export interface RetryAnswer {
  id: string;
  retried: number;
  /** The batch had ended and is live again. */
  reopened: boolean;
}

/** GET /api/dashboard/operations */
export interface Operations {
  models: {
    model: string;
    in_flight: number;
    limit: number;
    pending: number;
    /** Requests/tokens-per-minute limits and use (issue 11); null when the model has none. */
    rate: {
      /** Per minute, in force (configured, else learned from the upstream's headers); null: none. */
      rpm: number | null;
      tpm: number | null;
      source: 'configured' | 'learned' | null;
      /** Started in the last minute by the live daemons (tokens as estimated against the limit). */
      requests_per_minute: number;
      tokens_per_minute: number;
      /** Epoch seconds until which the model is paused after a 429, or null. */
      paused_until: number | null;
      /** The live daemons' adaptive concurrency, summed; null when not adaptive. */
      adaptive_concurrency: number | null;
    } | null;
  }[];
  dispatch: { start: number; bucket_seconds: number; series: { model: string; counts: number[] }[] };
  daemons: {
    id: string;
    host: string;
    pid: number;
    version: string | null;
    health: 'alive' | 'stale' | 'stopped';
    started_at: number;
    heartbeat_at: number;
    stopped_at: number | null;
    in_flight: number;
  }[];
  queue: { pending: number; ready: number; in_flight: number; live_batches: number };
  /** The server's clock. */
  now: number;
}

export type { BatchLifecycleStatus, BatchObject, RequestState };

/** An owner's webhook receiver: GET /api/dashboard/webhooks lists them. */
export interface WebhookEndpoint {
  /** `we_<32 hex>` */
  id: string;
  object: 'webhook_endpoint';
  url: string;
  events: ('batch.completed' | 'batch.failed' | 'batch.expired' | 'batch.cancelled')[];
  /** disabled: it kept failing; it receives nothing until enabled (POST …/:id/enable). */
  status: 'active' | 'disabled';
  /** Consecutive failed attempts since the last success. */
  failures: number;
  last_success_at: number | null;
  last_failure_at: number | null;
  last_error: string | null;
  disabled_at: number | null;
  created_at: number;
}

/** POST /api/dashboard/webhooks {url, events?}: the new endpoint and its signing secret, shown once. */
export interface CreatedWebhookEndpoint extends WebhookEndpoint {
  secret: string;
}

/** GET /api/dashboard/webhooks/deliveries: one event for one endpoint. */
export interface WebhookDelivery {
  event_id: string;
  type: WebhookEndpoint['events'][number];
  batch_id: string;
  endpoint_id: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  /** When the next attempt is due (pending only). */
  next_attempt_at: number | null;
  last_status: number | null;
  last_error: string | null;
  delivered_at: number | null;
  created_at: number;
}
