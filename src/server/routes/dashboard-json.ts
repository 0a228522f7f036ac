import type { BatchInfo, BatchStatus, BatchUpstream } from '../../domain/types.js';
import type { ModelPrice } from '../../domain/usage.js';
import type { BatchOverviewPage } from '../../store/reads/dashboard/batch-list.js';
import type { Operations as OperationsRecord } from '../../store/reads/dashboard/operations.js';
import type { BatchProgress as ProgressRecord } from '../../store/reads/dashboard/progress.js';
import type {
  FailureSummary as FailureRecord,
  RequestDetail as RequestDetailRecord,
  RequestSummary,
  RequestSummaryPage,
} from '../../store/reads/dashboard/requests.js';
import type {
  BatchList,
  BatchProgress,
  DashboardBatch,
  FailureSummary,
  Operations,
  RequestDetail,
  RequestPage,
  RequestRow,
} from '../dashboard-wire.js';
import { batchObject } from '../objects.js';

/** The dashboard's serializers: store records to the wire types of dashboard-wire.ts. */

const seconds = (d: Date | null): number | null => (d === null ? null : Math.floor(d.getTime() / 1000));

/** The /v1 Batch object (the same serializer as the API's) with the dashboard's progress fields. */
export function dashboardBatch(
  batch: BatchInfo,
  status: BatchStatus,
  recentRate: number | null,
  prices: Readonly<Record<string, ModelPrice>>,
  upstreams: BatchUpstream[] = [],
): DashboardBatch {
  return {
    ...batchObject(batch, status, upstreams, prices),
    counts: {
      total: status.totalRequests,
      pending: status.pendingRequests,
      in_progress: status.inProgressRequests,
      completed: status.completedRequests,
      failed: status.failedRequests,
      canceled: status.canceledRequests,
    },
    recent_rate: recentRate,
    finished_at: seconds(batch.finishedAt),
    retried: batch.retriedRequests,
  };
}

/** `upstreams`: each batch's routes by batch id (src/store/batches/batch-routes.ts upstreamsOf). */
export function batchList(
  page: BatchOverviewPage,
  prices: Readonly<Record<string, ModelPrice>>,
  upstreams: ReadonlyMap<string, BatchUpstream[]> = new Map(),
): BatchList {
  const data = page.data.map((o) =>
    dashboardBatch(o.batch, o.progress, o.recentRate, prices, upstreams.get(o.batch.id)),
  );
  return {
    object: 'list',
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: page.hasMore,
    has_newer: page.hasNewer,
    total: page.total,
    total_exact: page.totalExact,
    offset: page.offset,
  };
}

export function batchProgress(
  p: ProgressRecord,
  prices: Readonly<Record<string, ModelPrice>>,
  upstreams: BatchUpstream[] = [],
): BatchProgress {
  return {
    ...dashboardBatch(p.batch, p.progress, p.recentRate, prices, upstreams),
    state_counts: p.stateCounts,
    throughput: {
      start: p.throughput.start.getTime() / 1000,
      bucket_seconds: p.throughput.bucketSeconds,
      completed: p.throughput.buckets.map((b) => b.completed),
      failed: p.throughput.buckets.map((b) => b.failed),
    },
  };
}

export function requestRow(r: RequestSummary): RequestRow {
  return {
    id: r.id,
    line: r.lineNumber,
    custom_id: r.customId,
    model: r.model,
    state: r.state,
    attempts: r.attempt,
    status_code: r.statusCode,
    error_code: r.errorCode,
    latency_ms: r.latencyMs,
    completed_at: seconds(r.completedAt),
  };
}

export function requestPage(page: RequestSummaryPage): RequestPage {
  return {
    object: 'list',
    data: page.data.map(requestRow),
    has_more: page.hasMore,
    has_previous: page.hasPrevious,
    total: page.total,
    offset: page.offset,
  };
}

export function requestDetail(d: RequestDetailRecord): RequestDetail {
  return {
    ...requestRow(d),
    method: d.method,
    path: d.path,
    body: d.body,
    response_body: d.responseBody,
    error_message: d.errorMessage,
    upstream_request_id: d.upstreamRequestId,
    created_at: seconds(d.createdAt)!,
    started_at: seconds(d.startedAt),
    not_before: seconds(d.notBefore),
    history: d.history.map((h) => ({
      attempt: h.attempt,
      started_at: seconds(h.startedAt),
      failed_at: seconds(h.failedAt)!,
      status_code: h.statusCode,
      error_code: h.errorCode,
      error_message: h.errorMessage,
      response_body: h.responseBody,
      retried_at: seconds(h.retriedAt)!,
    })),
  };
}

export function failureSummary(f: FailureRecord): FailureSummary {
  return { failed: f.failed, retriable: f.retriable, codes: f.codes, retried: f.retried };
}

export function operations(ops: OperationsRecord): Operations {
  return {
    models: ops.models.map((m) => ({
      model: m.model,
      in_flight: m.inFlight,
      limit: m.limit,
      pending: m.pending,
      rate: m.rate && {
        rpm: m.rate.rpm,
        tpm: m.rate.tpm,
        source: m.rate.source,
        requests_per_minute: m.rate.requestsPerMinute,
        tokens_per_minute: m.rate.tokensPerMinute,
        paused_until: seconds(m.rate.pausedUntil),
        adaptive_concurrency: m.rate.adaptiveConcurrency,
      },
    })),
    dispatch: {
      start: ops.dispatch.start.getTime() / 1000,
      bucket_seconds: ops.dispatch.bucketSeconds,
      series: ops.dispatch.series,
    },
    daemons: ops.daemons.map((d) => ({
      id: d.id,
      host: d.host,
      pid: d.pid,
      version: d.version,
      health: d.health,
      started_at: seconds(d.startedAt)!,
      heartbeat_at: d.heartbeatAt.getTime() / 1000,
      stopped_at: seconds(d.stoppedAt),
      in_flight: d.inFlight,
    })),
    queue: {
      pending: ops.queue.pending,
      ready: ops.queue.ready,
      in_flight: ops.queue.inFlight,
      live_batches: ops.queue.liveBatches,
    },
    now: Date.now() / 1000,
  };
}
