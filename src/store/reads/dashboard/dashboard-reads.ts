import type pg from 'pg';
import { batchRatePauseSql } from '../../../db/sql/queue/rate-budget.js';
import type { BatchUpstream } from '../../../domain/types.js';
import { upstreamsOf } from '../../batches/batch-routes.js';
import { type BatchOverviewPage, type ListBatchOverviewsOptions, listBatchOverviews } from './batch-list.js';
import { type Operations, operations } from './operations.js';
import { type BatchProgress, batchProgress } from './progress.js';
import {
  type FailureSummary,
  failureSummary,
  getRequestDetail,
  type ListRequestSummariesOptions,
  listRequestSummaries,
  type RequestDetail,
  type RequestSummaryPage,
} from './requests.js';
import { SendsMemory } from './sends-memory.js';

/** The settings the dashboard's reads depend on (the manager's). */
export interface DashboardReadSettings {
  /** A daemon silent for longer is not counted among those who can send a route. */
  deadDaemonAfterMs: number;
  /** Models configured on this server: their limits are shown to every owner. */
  configuredModels: string[];
  defaultModelConcurrency: number;
  /** The HTTP statuses the daemons retry: which failures a retry of "retriable" ones would requeue. */
  retryableStatuses: ReadonlySet<number>;
}

/**
 * The read model of the dashboard and of the CLI's progress line, on one database (a pool and a
 * quoted schema): each method is one read of the pages the dashboard shows, scoped to an owner (null:
 * every owner). A batch or request the owner cannot see is a NotFoundError.
 */
export class DashboardReads {
  /** The operations page's sends read by earlier polls (each poll reads only newer ones). */
  private readonly sends = new SendsMemory();

  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly settings: DashboardReadSettings,
  ) {}

  /** A page of batches with their progress, newest first, filtered by status or search. */
  listBatches(options: ListBatchOverviewsOptions): Promise<BatchOverviewPage> {
    return listBatchOverviews(this.pool, this.schema, options);
  }

  /** Per batch id, where its requests go and how many live daemons can send them. */
  upstreams(batchIds: string[]): Promise<Map<string, BatchUpstream[]>> {
    return upstreamsOf(this.pool, this.schema, batchIds, this.settings.deadDaemonAfterMs);
  }

  /** One batch's counts, rate, usage and throughput chart. */
  progress(batchId: string, owner: string | null): Promise<BatchProgress> {
    return batchProgress(this.pool, this.schema, batchId, owner);
  }

  /** A page of a batch's requests without bodies (the table of the batch page). */
  requests(batchId: string, options: ListRequestSummariesOptions): Promise<RequestSummaryPage> {
    return listRequestSummaries(this.pool, this.schema, batchId, options);
  }

  /** One request with its bodies and its past failures. */
  requestDetail(batchId: string, requestId: string, owner: string | null): Promise<RequestDetail> {
    return getRequestDetail(this.pool, this.schema, batchId, requestId, owner);
  }

  /** A batch's failures grouped by code, and how many a retry of the retriable ones would requeue. */
  failures(batchId: string, owner: string | null): Promise<FailureSummary> {
    return failureSummary(this.pool, this.schema, batchId, owner, this.settings.retryableStatuses);
  }

  /** The operators' page: load per model against limits, dispatch rate, daemons, queue depth. */
  operations(owner: string | null): Promise<Operations> {
    return operations(this.pool, this.schema, {
      owner,
      configuredModels: this.settings.configuredModels,
      defaultModelConcurrency: this.settings.defaultModelConcurrency,
      deadDaemonAfterMs: this.settings.deadDaemonAfterMs,
      sends: this.sends,
    });
  }

  /** The end (epoch ms) of the latest rate-limit pause of the batch's models, or null when none is paused. */
  async rateLimitedUntil(batchId: string): Promise<number | null> {
    const { rows } = await this.pool.query<{ until_ms: number | null }>(batchRatePauseSql(this.schema), [
      batchId,
    ]);
    return rows[0]?.until_ms ?? null;
  }
}
