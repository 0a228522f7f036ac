import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { Semaphore } from '../daemon/semaphore.js';
import { migrate } from '../db/migrate.js';
import { deadlinePool, withStatementDeadline } from '../db/statement-deadline.js';
import type { DaemonConfig } from '../dispatch/config.js';
import { createUpstreamRouter, limitsFromRouting, type RoutingConfig } from '../dispatch/upstream-routing.js';
import { MESSAGE_BATCH_LIMITS } from '../domain/message-batch.js';
import type { ModelPrice } from '../domain/usage.js';
import { type DaemonHandle, PostgresRequestManager } from '../manager/request-manager.js';
import type { WebhookDeliveryOptions } from '../webhooks/delivery.js';
import { anthropicError } from './anthropic-objects.js';
import { authenticate, bearerCheck } from './auth.js';
import type { ApiContext, Call } from './context.js';
import { serveDashboard } from './dashboard-static.js';
import {
  applyInboundDeadlines,
  DEFAULT_INBOUND_DEADLINES,
  type InboundDeadlines,
  serverOptions,
  timedOut,
  trackRequest,
} from './deadlines.js';
import { toApiError, withDatabaseDeadline } from './errors.js';
import { ApiError, sendError, sendJson } from './http.js';
import { createServerMetrics, registerWaitingGauge } from './metrics.js';
import { OPENAPI_DOCUMENT } from './openapi.js';
import { Router } from './router.js';
import {
  cancelMessageBatch,
  createMessageBatch,
  deleteMessageBatch,
  listMessageBatchesRoute,
  messageBatchResults,
  retrieveMessageBatch,
} from './routes/anthropic-batches.js';
import { cancelBatch, createBatch, listBatches, retrieveBatch } from './routes/batches.js';
import { addDashboardRoutes } from './routes/dashboard.js';
import { deleteFile, fileContent, listFiles, retrieveFile } from './routes/files.js';
import { addWebhookRoutes } from './routes/webhooks.js';
import { uploadFile } from './upload.js';

export interface ServerOptions {
  /** The caller owns it (the CLI makes it from --database-url or the embedded PostgreSQL). */
  pool: pg.Pool;
  /** Default 'fusillade'. */
  schema?: string;
  /** Default 8080; 0 = ephemeral. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default true: run the daemon in-process (manager.run()). */
  daemon?: boolean;
  routing?: RoutingConfig;
  /** Limits, retries, timeouts; modelConcurrencyLimits also come from routing. */
  daemonConfig?: Partial<DaemonConfig>;
  /** Default 200 MB. */
  maxUploadBytes?: number;
  /** Default 50,000. */
  maxLinesPerFile?: number;
  /** Most embedding inputs across the lines of a /v1/embeddings file; default 50,000 (OpenAI's). */
  maxEmbeddingInputsPerFile?: number;
  /**
   * Uploads larger than the pre-buffer stream into the database holding a pooled connection;
   * at most this many at once (the others wait). Default: half the pool's max, at least 1.
   */
  maxConcurrentUploads?: number;
  /**
   * Bytes of validated lines an upload reads before it takes a database connection (default 8 MB):
   * smaller files never hold one while their client is still sending.
   */
  uploadPreBufferBytes?: number;
  /** An upload that sends nothing for this long is cut off with a 408; default 30 s. */
  uploadIdleTimeoutMs?: number;
  /** A request whose headers take longer is answered 408; default 30 s (src/server/deadlines.ts). */
  headersTimeoutMs?: number;
  /**
   * A request whose body stops arriving (or an answer the client stops reading) for this long is
   * answered 408 / closed; default 30 s. A deadline on progress: slow but steady transfers go on.
   */
  idleTimeoutMs?: number;
  /** Largest JSON request body (batch creation); default 1 MB. */
  maxJsonBytes?: number;
  /** Largest message batch creation body (POST /v1/messages/batches); default 256 MB, Anthropic's. */
  maxMessageBatchBytes?: number;
  /** Most requests in one message batch; default 100,000, Anthropic's. */
  maxMessageBatchRequests?: number;
  /** A database call slower than this answers 503 instead of hanging; default 5000 ms. */
  dbTimeoutMs?: number;
  /** Structured log entries (requests, uploads, errors); never carries keys or bodies. */
  logger?: (entry: Record<string, unknown>) => void;
  /**
   * When set, /metrics answers only requests with `Authorization: Bearer <metricsToken>` (401
   * otherwise). Unset (the default), /metrics is open, for a Prometheus scraping a private network.
   */
  metricsToken?: string;
  /**
   * Accept webhook receivers on private and loopback addresses (`--allow-private-webhooks`), at
   * registration and delivery; default false.
   */
  allowPrivateWebhooks?: boolean;
  /** Prices per million tokens by model (models.MODEL.price): batch objects carry their cost. */
  modelPrices?: Record<string, ModelPrice>;
  /**
   * The completion_window values POST /v1/batches accepts (`fusillade serve` passes
   * --completion-windows, default ["24h", "1h"]); others get a 400 invalid_completion_window.
   * Default here: any valid window ("90s", "30m", "24h", "7d").
   */
  completionWindows?: readonly string[];
  /** The in-process daemon's webhook deliverer (src/webhooks/delivery.ts). */
  webhooks?: WebhookDeliveryOptions;
}

export interface FusilladeServer {
  url: string;
  port: number;
  manager: PostgresRequestManager;
  close(): Promise<void>;
}

const DEFAULTS = {
  schema: 'fusillade',
  port: 8080,
  host: '127.0.0.1',
  maxUploadBytes: 200 * 1024 * 1024,
  maxLinesPerFile: 50_000,
  maxEmbeddingInputsPerFile: 50_000,
  maxJsonBytes: 1024 * 1024,
  maxMessageBatchBytes: MESSAGE_BATCH_LIMITS.maxBytes,
  maxMessageBatchRequests: MESSAGE_BATCH_LIMITS.maxRequests,
  uploadIdleTimeoutMs: 30_000,
  uploadPreBufferBytes: 8 * 1024 * 1024,
  dbTimeoutMs: 5000,
};

/** The Batch API and the dashboard's JSON: one router, one key check, one error envelope. */
function apiRouter(): Router {
  const router = new Router()
    .add('POST', '/v1/files', uploadFile)
    .add('GET', '/v1/files', listFiles)
    .add('GET', '/v1/files/:id', retrieveFile)
    .add('DELETE', '/v1/files/:id', deleteFile)
    .add('GET', '/v1/files/:id/content', fileContent)
    .add('POST', '/v1/batches', createBatch)
    .add('GET', '/v1/batches', listBatches)
    .add('GET', '/v1/batches/:id', retrieveBatch)
    .add('POST', '/v1/batches/:id/cancel', cancelBatch)
    .add('POST', '/v1/messages/batches', createMessageBatch)
    .add('GET', '/v1/messages/batches', listMessageBatchesRoute)
    .add('GET', '/v1/messages/batches/:id', retrieveMessageBatch)
    .add('DELETE', '/v1/messages/batches/:id', deleteMessageBatch)
    .add('POST', '/v1/messages/batches/:id/cancel', cancelMessageBatch)
    .add('GET', '/v1/messages/batches/:id/results', messageBatchResults);
  return addWebhookRoutes(addDashboardRoutes(router));
}

/**
 * Starts the OpenAI-compatible Batch API (and, unless `daemon: false`, the daemon) on one pool.
 * Migrates the schema first. close() stops the HTTP server and the daemon, not the pool.
 */
export async function createServer(options: ServerOptions): Promise<FusilladeServer> {
  const schema = options.schema ?? DEFAULTS.schema;
  await migrate(options.pool, { schema });
  const metrics = createServerMetrics();
  const routing = options.routing ?? {};
  const upstreamRouter = createUpstreamRouter(routing);
  const routed = limitsFromRouting(routing);
  const logger = stampLogs(options.logger);
  const daemonConfig: Partial<DaemonConfig> = {
    ...routed,
    ...(options.logger ? { logger } : {}),
    ...options.daemonConfig,
    modelConcurrencyLimits: {
      ...routed.modelConcurrencyLimits,
      ...options.daemonConfig?.modelConcurrencyLimits,
    },
    // The same router decides uploads' endpoints and the daemon's dispatch.
    upstreamRouter,
    // One registry: /metrics shows the server's and the in-process daemon's metrics together.
    metricsRegistry: metrics.registry,
    // /metrics names the configured models only: the tenants' model names are theirs.
    metricsModels: [...Object.keys(routing.models ?? {}), ...(options.daemonConfig?.metricsModels ?? [])],
  };
  // The API's one-shot statements are cancelled by PostgreSQL at the deadline (src/db/statement-deadline.ts).
  const manager = new PostgresRequestManager(deadlinePool(options.pool), {
    schema,
    ...daemonConfig,
    webhooks: {
      ...options.webhooks,
      allowPrivate: options.allowPrivateWebhooks ?? options.webhooks?.allowPrivate ?? false,
    },
  });
  registerWaitingGauge(metrics.registry, manager);
  const dbTimeoutMs = options.dbTimeoutMs ?? DEFAULTS.dbTimeoutMs;
  const ctx: ApiContext = {
    manager,
    router: upstreamRouter,
    metrics,
    maxUploadBytes: options.maxUploadBytes ?? DEFAULTS.maxUploadBytes,
    maxLinesPerFile: options.maxLinesPerFile ?? DEFAULTS.maxLinesPerFile,
    maxEmbeddingInputsPerFile: options.maxEmbeddingInputsPerFile ?? DEFAULTS.maxEmbeddingInputsPerFile,
    maxJsonBytes: options.maxJsonBytes ?? DEFAULTS.maxJsonBytes,
    maxMessageBatchBytes: options.maxMessageBatchBytes ?? DEFAULTS.maxMessageBatchBytes,
    maxMessageBatchRequests: options.maxMessageBatchRequests ?? DEFAULTS.maxMessageBatchRequests,
    prices: options.modelPrices ?? {},
    completionWindows: options.completionWindows ?? null,
    uploadIdleTimeoutMs: options.uploadIdleTimeoutMs ?? DEFAULTS.uploadIdleTimeoutMs,
    uploadPreBufferBytes: options.uploadPreBufferBytes ?? DEFAULTS.uploadPreBufferBytes,
    uploadSlots: new Semaphore(options.maxConcurrentUploads ?? defaultUploadSlots(options.pool)),
    db: (work) => withDatabaseDeadline(work, dbTimeoutMs),
    log: logger,
  };
  const router = apiRouter();
  const metricsGate = options.metricsToken ? bearerCheck(options.metricsToken) : undefined;
  let daemon: DaemonHandle | undefined;

  const deadlines: InboundDeadlines = {
    headersTimeoutMs: options.headersTimeoutMs ?? DEFAULT_INBOUND_DEADLINES.headersTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_INBOUND_DEADLINES.idleTimeoutMs,
  };
  const server = http.createServer(serverOptions(deadlines), (req, res) => {
    trackRequest(req, res);
    const requestId = `req_${randomBytes(12).toString('hex')}`;
    res.setHeader('x-request-id', requestId);
    const started = process.hrtime.bigint();
    const method = req.method ?? 'GET';
    let route = 'unmatched';
    res.on('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.requests.inc({ method, route, status: String(res.statusCode) });
      metrics.duration.observe({ method, route }, seconds);
      logger({
        msg: 'request',
        requestId,
        method,
        route,
        status: res.statusCode,
        ms: Math.round(seconds * 1000),
      });
    });
    // Anthropic's API (/v1/messages…) answers errors in Anthropic's envelope, the rest in OpenAI's.
    let anthropicApi = false;
    const answer = async (): Promise<void> => {
      // Inside the handler: an unparsable request target (absolute-form garbage) must be a 400,
      // not an exception thrown out of the request listener.
      const url = parseTarget(req.url);
      const path = url.pathname;
      anthropicApi = path === '/v1/messages' || path.startsWith('/v1/messages/');
      if (path === '/healthz') {
        route = path;
        return health(ctx, res, daemon !== undefined);
      }
      if (path === '/metrics') {
        route = path;
        if (metricsGate && !metricsGate(req)) {
          throw new ApiError(401, 'Missing or wrong metrics token: send "Authorization: Bearer <token>".', {
            code: 'invalid_metrics_token',
            headers: { 'www-authenticate': 'Bearer realm="metrics"' },
          });
        }
        res.setHeader('content-type', metrics.registry.contentType);
        res.end(await metrics.registry.metrics());
        return;
      }
      if (path === '/openapi.json') {
        route = path;
        return sendJson(res, 200, OPENAPI_DOCUMENT);
      }
      if (path === '/v1' || path.startsWith('/v1/') || path.startsWith('/api/dashboard/')) {
        const owner = await ctx.db(authenticate(manager, req));
        if (!owner) {
          throw new ApiError(
            401,
            anthropicApi
              ? 'Missing, unknown or revoked API key: send "x-api-key: <key>".'
              : 'Missing, unknown or revoked API key: send "Authorization: Bearer <key>".',
            { code: 'invalid_api_key' },
          );
        }
        const match = router.match(method, path);
        if (!match.route) {
          if (match.allowed.length > 0) {
            throw new ApiError(405, `Method ${method} is not allowed on ${path}.`, {
              code: 'method_not_allowed',
              headers: { allow: match.allowed.join(', ') },
            });
          }
          throw new ApiError(404, `Invalid URL (${method} ${path}).`, { code: 'unknown_url' });
        }
        route = match.route.pattern;
        const call: Call = { req, res, params: match.params, query: url.searchParams, owner, requestId };
        return match.route.handler(ctx, call);
      }
      route = 'dashboard';
      if (!(await serveDashboard(req, res, path))) {
        route = 'unmatched';
        throw new ApiError(404, `Invalid URL (${method} ${path}).`, { code: 'unknown_url' });
      }
    };
    withStatementDeadline(dbTimeoutMs, answer).catch((err) => {
      if (timedOut(res)) return; // answered 408 by the idle deadline; the handler then lost its body
      const apiError = toApiError(err);
      if (apiError.status >= 500) {
        logger({
          level: 'error',
          msg: 'request failed',
          requestId,
          method,
          route,
          status: apiError.status,
          error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
        });
      }
      if (res.headersSent) res.destroy();
      else if (anthropicApi)
        sendJson(res, apiError.status, anthropicError(apiError, requestId), apiError.headers);
      else sendError(res, apiError);
    });
  });
  // Deadlines on headers and on progress, never on a transfer's total time (long downloads and
  // uploads); idle keep-alive sockets still close.
  applyInboundDeadlines(server, deadlines);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULTS.port, options.host ?? DEFAULTS.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const closeHttp = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
      // In-flight requests get a moment; then every socket goes.
      setTimeout(() => server.closeAllConnections(), 2000).unref();
    });
  if (options.daemon ?? true) {
    try {
      daemon = await manager.run();
    } catch (err) {
      await closeHttp();
      throw err;
    }
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    manager,
    close() {
      closing ??= (async () => {
        await closeHttp();
        await daemon?.stop();
      })();
      return closing;
    },
  };
}

async function health(ctx: ApiContext, res: http.ServerResponse, daemonRunning: boolean): Promise<void> {
  try {
    await ctx.db(ctx.manager.ping());
    sendJson(res, 200, { status: 'ok', database: 'ok', daemon: daemonRunning ? 'running' : 'off' });
  } catch {
    sendJson(res, 503, {
      status: 'unavailable',
      database: 'unreachable',
      daemon: daemonRunning ? 'running' : 'off',
    });
  }
}

function defaultUploadSlots(pool: pg.Pool): number {
  const max = (pool as { options?: { max?: number } }).options?.max ?? 10;
  return Math.max(1, Math.floor(max / 2));
}

function parseTarget(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    throw new ApiError(400, 'The request target is not a valid URL.', { code: 'invalid_url' });
  }
}

/** Entries get the daemon's shape (level, time) so one sink can take both; no sink, no logs. */
function stampLogs(sink: ServerOptions['logger']): (entry: Record<string, unknown>) => void {
  if (!sink) return () => {};
  return (entry) => {
    try {
      sink({ level: 'info', time: new Date().toISOString(), ...entry });
    } catch {
      // A failing log sink must not take a request (or the process) down with it.
    }
  };
}
