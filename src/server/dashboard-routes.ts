import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type BatchOverview,
  batchThroughput,
  getRequestDetail,
  isBatchStatus,
  isRequestState,
  listBatchOverviews,
  listRequestSummaries,
  operations,
  type RequestSummary,
  recentRate,
} from '../store/dashboard-queries.js';
import type { DashboardContext } from './dashboard-context.js';
import { batchId as apiBatchId, fileId as apiFileId, parseBatchId } from './ids.js';

export type { DashboardContext } from './dashboard-context.js';

/**
 * The web dashboard: static pages from the package's dashboard/ folder (no build step) and the
 * JSON it needs beyond /v1 under /api/dashboard/*, with the same Bearer keys and owner scoping.
 * Returns false for paths that are not the dashboard's, so the server answers 404. Unexpected
 * errors propagate to the server, which maps and logs them like the API's.
 */
export async function handleDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: DashboardContext,
): Promise<boolean> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const path = url.pathname;
  if (path.startsWith('/api/dashboard/')) {
    await handleApi(req, res, ctx, path.slice('/api/dashboard/'.length).split('/'), url.searchParams);
    return true;
  }
  if (path === '/' || path === '/index.html') return serveStatic(req, res, ctx, 'index.html');
  if (path.startsWith('/assets/')) return serveStatic(req, res, ctx, path.slice(1));
  return false;
}

// ---------------------------------------------------------------------------------------------
// Static files

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Scripts, styles and data only from this server; nothing inline, nothing from elsewhere. */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
  "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/** The package's dashboard/ folder, found upwards from this module (src/ under tsx, dist/src/ when built). */
function findDashboardRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'dashboard');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('the dashboard/ folder is missing from the package');
}

let dashboardRoot: string | undefined;

async function serveStatic(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: DashboardContext,
  relative: string,
): Promise<boolean> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    ctx.sendError(res, 405, `Method ${req.method} is not allowed here.`, 'method_not_allowed');
    return true;
  }
  dashboardRoot ??= findDashboardRoot();
  let decoded: string;
  try {
    decoded = decodeURIComponent(relative);
  } catch {
    return false;
  }
  // Resolve, then check containment: "..", encoded slashes and absolute paths cannot leave the folder.
  const file = resolve(dashboardRoot, decoded);
  const type = CONTENT_TYPES[extname(file)];
  if (decoded.includes('\0') || !file.startsWith(dashboardRoot + sep) || type === undefined) return false;
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch {
    return false;
  }
  res.writeHead(200, {
    'content-type': type,
    'content-length': content.length,
    // Small files that change with each release: revalidate rather than serve a stale dashboard.
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    ...(type.startsWith('text/html')
      ? { 'content-security-policy': CSP, 'referrer-policy': 'no-referrer' }
      : {}),
  });
  res.end(req.method === 'HEAD' ? undefined : content);
  return true;
}

// ---------------------------------------------------------------------------------------------
// JSON API

const seconds = (d: Date | null) => (d === null ? null : Math.floor(d.getTime() / 1000));
const fileIdOrNull = (uuid: string | null) => (uuid === null ? null : apiFileId(uuid));

function overviewJson(o: BatchOverview) {
  const b = o.batch;
  const p = o.progress;
  return {
    id: apiBatchId(b.id),
    object: 'batch',
    endpoint: b.endpoint,
    status: b.status,
    input_file_id: apiFileId(b.fileId),
    output_file_id: fileIdOrNull(b.outputFileId),
    error_file_id: fileIdOrNull(b.errorFileId),
    metadata: b.metadata,
    created_at: seconds(b.createdAt),
    in_progress_at: seconds(b.inProgressAt),
    expires_at: seconds(b.expiresAt),
    finalizing_at: seconds(b.finalizingAt),
    completed_at: seconds(b.completedAt),
    failed_at: seconds(b.failedAt),
    expired_at: seconds(b.expiredAt),
    cancelling_at: seconds(b.cancellingAt),
    cancelled_at: seconds(b.cancelledAt),
    finished_at: seconds(b.finishedAt),
    counts: {
      total: p.totalRequests,
      pending: p.pendingRequests,
      in_progress: p.inProgressRequests,
      completed: p.completedRequests,
      failed: p.failedRequests,
      canceled: p.canceledRequests,
    },
    /** Requests finished per second over the last minute, while the batch is live. */
    recent_rate: o.recentRate,
  };
}

function requestJson(r: RequestSummary) {
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

/** A 400 for a bad query parameter. */
class BadParam extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

function intParam(params: URLSearchParams, name: string): number | undefined {
  const v = params.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new BadParam(`${name} must be a non-negative integer`, name);
  return n;
}

/** A batch id from the path: the API's `batch_<hex>`; anything else cannot exist (read as not found). */
function batchUuid(id: string | undefined): string {
  return parseBatchId(id) ?? String(id);
}

async function handleApi(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: DashboardContext,
  parts: string[],
  params: URLSearchParams,
): Promise<void> {
  res.setHeader('cache-control', 'no-store');
  const owner = await ctx.authenticate(req);
  if (owner === null) {
    ctx.sendError(
      res,
      401,
      'Missing or invalid API key: send Authorization: Bearer <key>.',
      'invalid_api_key',
    );
    return;
  }
  const { manager } = ctx;
  const { pool, schema } = manager;
  const method = req.method ?? 'GET';
  // "batches/<id>/requests/<id>" → "batches/:/requests/:"
  const route = `${method} ${parts.map((p, i) => (parts[0] === 'batches' && i % 2 === 1 ? ':' : p)).join('/')}`;
  const batchId = batchUuid(parts[1]);
  try {
    switch (route) {
      case 'GET me':
        ctx.sendJson(res, 200, { owner });
        return;
      case 'GET batches': {
        const status = params.get('status') || undefined;
        if (status !== undefined && !isBatchStatus(status))
          throw new BadParam(`unknown status ${status}`, 'status');
        const after = params.get('after');
        const page = await listBatchOverviews(pool, schema, {
          owner,
          status,
          search: params.get('q') ?? undefined,
          after: after ? batchUuid(after) : undefined,
          limit: intParam(params, 'limit'),
        });
        const data = page.data.map(overviewJson);
        ctx.sendJson(res, 200, {
          object: 'list',
          data,
          first_id: data[0]?.id ?? null,
          last_id: data.at(-1)?.id ?? null,
          has_more: page.hasMore,
        });
        return;
      }
      case 'GET batches/:/progress': {
        // The ownership check first: the other reads trust the id.
        const info = await manager.getBatch(batchId, { owner });
        const [status, throughput, rate] = await Promise.all([
          manager.getBatchStatus(batchId, { owner }),
          batchThroughput(pool, schema, batchId, owner),
          recentRate(pool, schema, batchId),
        ]);
        ctx.sendJson(res, 200, {
          ...overviewJson({ batch: info, progress: status, recentRate: info.finishedAt ? null : rate }),
          usage: {
            input_tokens: status.usage.inputTokens,
            output_tokens: status.usage.outputTokens,
            total_tokens: status.usage.totalTokens,
          },
          throughput: {
            start: throughput.start.getTime() / 1000,
            bucket_seconds: throughput.bucketSeconds,
            completed: throughput.buckets.map((b) => b.completed),
            failed: throughput.buckets.map((b) => b.failed),
          },
        });
        return;
      }
      case 'GET batches/:/requests': {
        const state = params.get('state') || undefined;
        if (state !== undefined && !isRequestState(state))
          throw new BadParam(`unknown state ${state}`, 'state');
        const page = await listRequestSummaries(pool, schema, batchId, {
          owner,
          state,
          search: params.get('q') ?? undefined,
          afterLine: intParam(params, 'after_line'),
          limit: intParam(params, 'limit'),
        });
        ctx.sendJson(res, 200, { object: 'list', data: page.data.map(requestJson), has_more: page.hasMore });
        return;
      }
      case 'GET batches/:/requests/:': {
        const d = await getRequestDetail(pool, schema, batchId, parts[3]!, owner);
        ctx.sendJson(res, 200, {
          ...requestJson(d),
          method: d.method,
          path: d.path,
          body: d.body,
          response_body: d.responseBody,
          error_message: d.errorMessage,
          upstream_request_id: d.upstreamRequestId,
          created_at: seconds(d.createdAt),
          started_at: seconds(d.startedAt),
          not_before: seconds(d.notBefore),
        });
        return;
      }
      case 'POST batches/:/retry': {
        const retried = await manager.retryFailedRequests(batchId, { owner });
        ctx.sendJson(res, 200, { id: apiBatchId(batchId), retried });
        return;
      }
      case 'GET operations': {
        const ops = await operations(pool, schema, {
          owner,
          configuredModels: Object.keys(manager.config.modelConcurrencyLimits),
          defaultModelConcurrency: manager.config.defaultModelConcurrency,
          deadDaemonAfterMs: manager.config.deadDaemonAfterMs,
        });
        ctx.sendJson(res, 200, operationsJson(ops));
        return;
      }
      default:
        ctx.sendError(res, 404, `Invalid URL (${method} /api/dashboard/${parts.join('/')}).`, 'unknown_url');
    }
  } catch (err) {
    if (!(err instanceof BadParam)) throw err;
    ctx.sendError(res, 400, err.message, 'invalid_request');
  }
}

function operationsJson(ops: Awaited<ReturnType<typeof operations>>) {
  return {
    models: ops.models.map((m) => ({
      model: m.model,
      in_flight: m.inFlight,
      limit: m.limit,
      pending: m.pending,
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
      started_at: seconds(d.startedAt),
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
