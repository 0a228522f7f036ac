import type pg from 'pg';
import { type CompressOptions, type CompressReport, compressFinished } from '../db/compress.js';
import { type PurgeOptions, type PurgeReport, previewPurge, purge } from '../db/purge.js';
import { assertSchemaName, DEFAULT_SCHEMA, qualify } from '../db/schema.js';
import { configureRateLimitsSql } from '../db/sql/queue/rate-budget.js';
import { type DaemonConfig, resolveDaemonConfig } from '../dispatch/config.js';
import type { DaemonHandle } from '../dispatch/interfaces.js';
import { ValidationError } from '../domain/errors.js';
import { type KeyEncryptionKey, parseKeyEncryptionKey } from '../domain/key-encryption.js';
import { checkModelConcurrency, checkModelRateLimits } from '../domain/model-limits.js';
import { resolveRetryableStatuses } from '../domain/retry.js';
import type { RequestTemplateInput } from '../domain/templates.js';
import { validateTemplate } from '../domain/templates.js';
import type {
  BatchInfo,
  BatchStatus,
  BatchUpstream,
  CreateBatchOptions,
  CreateFileOptions,
  FileInfo,
  ListRequestsOptions,
  Page,
  RequestRecord,
  RetryOptions,
} from '../domain/types.js';
import type { ModelRouter } from '../domain/upstream-route.js';
import { ApiKeys } from '../store/api-keys.js';
import { completionWindowMs, DEFAULT_COMPLETION_WINDOW } from '../store/batches/batch-options.js';
import { rerouteBatch } from '../store/batches/batch-routes.js';
import { getBatchStatus } from '../store/batches/batch-status.js';
import type { BatchEvents } from '../store/batches/batches.js';
import * as batches from '../store/batches/batches.js';
import { notifyEvents } from '../store/batches/events.js';
import { findBatchIdByIdempotencyKey } from '../store/batches/find-batch-by-key.js';
import {
  batchResultLines,
  checkInclude,
  fileLines,
  type ResultsInclude,
} from '../store/files/content-lines.js';
import * as files from '../store/files/files.js';
import { OwnerWeights } from '../store/owner-weights.js';
import { ApiReads } from '../store/reads/api/api-reads.js';
import { deleteEndedMessageBatch } from '../store/reads/api/message-batches.js';
import { DashboardReads } from '../store/reads/dashboard/dashboard-reads.js';
import type { WebhookDeliveryOptions } from '../webhooks/delivery.js';
import { WebhookEndpoints } from '../webhooks/endpoints.js';

export interface ManagerConfig extends Omit<Partial<DaemonConfig>, 'keyEncryptionKey'> {
  /** PostgreSQL schema of fusillade's tables (default "fusillade"); must match migrate()'s. */
  schema?: string;
  /** Seals templates' upstream keys at rest; default FUSILLADE_KEY_ENCRYPTION_KEY; null: none, unread. */
  keyEncryptionKey?: string | null;
  /**
   * The completion window of a batch created without one: "24h" by default (as OpenAI's); null
   * for no deadline (the Rust crate's behaviour: nothing expires however long the batch takes).
   */
  defaultCompletionWindow?: string | null;
  /** The webhook deliverer every run() starts next to its daemon (src/webhooks/delivery.ts). */
  webhooks?: WebhookDeliveryOptions;
}

/** Refuses a shouldRetry that is not a function when the manager is made (settings: resolveDaemonConfig). */
function checkRetryRules(config: DaemonConfig): void {
  if (config.shouldRetry !== undefined && typeof config.shouldRetry !== 'function') {
    throw new ValidationError([
      { code: 'invalid_config', param: 'shouldRetry', message: 'shouldRetry must be a function' },
    ]);
  }
}

/** The environment variable the library reads the key-encryption key from when the config has none. */
export const KEY_ENCRYPTION_ENV = 'FUSILLADE_KEY_ENCRYPTION_KEY';

const nonEmpty = (v: string | undefined) => (v === undefined || v.trim() === '' ? undefined : v);

export type { DaemonHandle };

/** Restricts an operation to one owner's files and batches; others' read as not found. */
export interface OwnerScope {
  owner?: string | null;
}

/**
 * The library's entry point: files of request templates, batches spawned from them, their
 * requests and progress, and `run()` for the daemon that sends them. All state is in PostgreSQL;
 * any number of managers and daemons may share one database.
 */
export class PostgresRequestManager {
  readonly pool: pg.Pool;
  /** Unquoted schema name. */
  readonly schemaName: string;
  /** Quoted schema name for inlining in SQL, e.g. `"fusillade"`. */
  readonly schema: string;
  readonly config: DaemonConfig;
  readonly events: BatchEvents;
  /** The completion window of batches created without one (null: no deadline). */
  readonly defaultCompletionWindow: string | null;
  /** The webhook deliverer's options (run() starts one beside each daemon). */
  readonly webhooks: WebhookDeliveryOptions;
  /** The Batch API server's keys (its Bearer check, `fusillade keys`). */
  readonly apiKeys: ApiKeys;
  /** Owners' weights in the fair share of each model's slots (`fusillade keys set-weight`). */
  readonly ownerWeights: OwnerWeights;
  /** Webhook receivers and their deliveries (the API's /v1/webhook_endpoints, `fusillade webhooks`). */
  readonly webhookEndpoints: WebhookEndpoints;
  /** The reads behind the Batch APIs' lists and downloads. */
  readonly apiReads: ApiReads;
  /** The reads behind the dashboard's pages and the CLI's progress line. */
  readonly dashboardReads: DashboardReads;
  /** Seals templates' upstream keys at rest (keyEncryptionKey, else FUSILLADE_KEY_ENCRYPTION_KEY). */
  private readonly keyEncryption: KeyEncryptionKey | null;

  constructor(pool: pg.Pool, config: ManagerConfig = {}) {
    const { schema, defaultCompletionWindow, webhooks, keyEncryptionKey, ...daemon } = config;
    this.defaultCompletionWindow =
      defaultCompletionWindow === undefined ? DEFAULT_COMPLETION_WINDOW : defaultCompletionWindow;
    completionWindowMs(this.defaultCompletionWindow); // refuses a bad window now, not at the first batch
    this.pool = pool;
    this.webhooks = webhooks ?? {};
    this.schemaName = assertSchemaName(schema ?? DEFAULT_SCHEMA);
    this.schema = qualify(this.schemaName);
    // The secret comes from the config, else from the environment (as the CLI reads it); run()'s
    // daemons get it too, to open what this manager seals.
    const secret =
      keyEncryptionKey === null ? undefined : (keyEncryptionKey ?? nonEmpty(process.env[KEY_ENCRYPTION_ENV]));
    this.config = resolveDaemonConfig({ ...daemon, keyEncryptionKey: secret });
    checkRetryRules(this.config);
    this.keyEncryption =
      this.config.keyEncryptionKey === undefined ? null : parseKeyEncryptionKey(this.config.keyEncryptionKey);
    this.events = notifyEvents(this.schemaName);
    this.apiKeys = new ApiKeys(pool, this.schema);
    this.ownerWeights = new OwnerWeights(pool, this.schema);
    this.webhookEndpoints = new WebhookEndpoints(pool, this.schema);
    this.apiReads = new ApiReads(pool, this.schema, this.config.deadDaemonAfterMs);
    this.dashboardReads = new DashboardReads(pool, this.schema, {
      deadDaemonAfterMs: this.config.deadDaemonAfterMs,
      configuredModels: Object.keys(this.config.modelConcurrencyLimits),
      defaultModelConcurrency: this.config.defaultModelConcurrency,
      retryableStatuses: resolveRetryableStatuses(this.config.retryableStatuses),
    });
  }

  /** Resolves once the database answers a trivial query (the server's readiness check). */
  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  /** Stores a file of templates; all are validated first and none is stored if one is invalid. */
  async createFile(
    name: string,
    description: string | null,
    templates: RequestTemplateInput[],
    options?: CreateFileOptions,
  ): Promise<string> {
    const issues = templates.flatMap((t, i) => validateTemplate(t, i));
    if (issues.length > 0) throw new ValidationError(issues);
    return this.createFileStream(name, description, templates, options);
  }

  /**
   * Stores a file from a stream of templates without holding them in memory (COPY in one
   * transaction). The first invalid template aborts it: nothing is stored.
   */
  createFileStream(
    name: string,
    description: string | null,
    templates: AsyncIterable<files.TemplateItem> | Iterable<files.TemplateItem>,
    options?: CreateFileOptions,
  ): Promise<string> {
    return files.insertFile(
      this.pool,
      this.schema,
      name,
      description,
      templates,
      options,
      this.keyEncryption,
    );
  }

  getFile(fileId: string, scope: OwnerScope = {}): Promise<FileInfo> {
    return files.getFile(this.pool, this.schema, fileId, scope.owner);
  }

  /**
   * A file's content as JSONL lines (each without its newline), streamed from the database as you
   * read: input files rebuilt from their templates, output and error files from their batch's
   * requests (the same lines the API's /files/{id}/content sends). Memory stays flat for any size.
   * A missing file (or another owner's) rejects the first read with a NotFoundError.
   */
  getFileContent(fileId: string, scope: OwnerScope = {}): AsyncIterableIterator<string> {
    return fileLines(this.pool, this.schema, () =>
      files.findFile(this.pool, this.schema, fileId, scope.owner),
    );
  }

  /**
   * A batch's results as JSONL lines in OpenAI's output-file format, streamed from the database as
   * you read: `completed` (the output file's lines), `failed` (the error file's: failed, canceled and
   * expired requests) or `all` (both, output first). A live batch gives its results so far.
   */
  getBatchResults(
    batchId: string,
    options: { include?: ResultsInclude } & OwnerScope = {},
  ): AsyncIterableIterator<string> {
    const include = checkInclude(options.include ?? 'all');
    return batchResultLines(this.pool, this.schema, () => this.getBatch(batchId, options), include);
  }

  /** Sets a file's expiry `seconds` after its creation (OpenAI's expires_after, known once an upload has ended). */
  setFileExpiry(fileId: string, seconds: number): Promise<void> {
    return files.setFileExpiry(this.pool, this.schema, fileId, seconds);
  }

  listFiles(options: files.ListFilesOptions = {}): Promise<Page<FileInfo>> {
    return files.listFiles(this.pool, this.schema, options);
  }

  deleteFile(fileId: string, scope: OwnerScope = {}): Promise<void> {
    return files.deleteFile(this.pool, this.schema, fileId, scope.owner);
  }

  /**
   * Creates a batch with one request per template of the file. Idempotent with `idempotencyKey`.
   * `completionWindow: null` gives it no deadline; without the option it gets the manager's
   * defaultCompletionWindow ("24h" unless configured). Where each request goes is decided now
   * (options.router, default this manager's upstreamRouter).
   */
  createBatch(fileId: string, options: CreateBatchOptions = {}): Promise<string> {
    const completionWindow =
      options.completionWindow === undefined ? this.defaultCompletionWindow : options.completionWindow;
    const router = options.router === undefined ? (this.config.upstreamRouter ?? null) : options.router;
    return batches.insertBatch(this.pool, this.schema, this.events, fileId, {
      ...options,
      completionWindow,
      router,
    });
  }

  getBatch(batchId: string, scope: OwnerScope = {}): Promise<BatchInfo> {
    return batches.getBatch(this.pool, this.schema, batchId, scope.owner);
  }

  /** The id of the batch the owner created with `idempotencyKey`, if any (one index probe). */
  findBatchByIdempotencyKey(idempotencyKey: string, scope: OwnerScope = {}): Promise<string | undefined> {
    return findBatchIdByIdempotencyKey(this.pool, this.schema, scope.owner ?? null, idempotencyKey);
  }

  /**
   * A batch's counts, usage and timestamps. `liveUsage: false` leaves a live batch's usage out (zero
   * until it ends) and saves the sums over its completed rows: for progress displays.
   */
  getBatchStatus(
    batchId: string,
    scope: OwnerScope = {},
    options: { liveUsage?: boolean } = {},
  ): Promise<BatchStatus> {
    return getBatchStatus(this.pool, this.schema, batchId, scope.owner, options);
  }

  listBatches(options: batches.ListBatchesOptions = {}): Promise<Page<BatchInfo>> {
    return batches.listBatches(this.pool, this.schema, options);
  }

  /** A batch's requests in input order; `options` filter by state or custom_id and page by line. */
  getBatchRequests(
    batchId: string,
    options: ListRequestsOptions & OwnerScope = {},
  ): Promise<RequestRecord[]> {
    return batches.listRequests(this.pool, this.schema, batchId, options.owner, options);
  }

  /** One update of the batch row; in-flight requests are aborted by the daemons. */
  cancelBatch(batchId: string, scope: OwnerScope = {}): Promise<BatchInfo> {
    return batches.cancelBatch(this.pool, this.schema, this.events, batchId, scope.owner);
  }

  /**
   * Requeues the batch's failed requests (attempts reset; all, or only the retriable ones) and
   * reopens it if it had ended; the failed outcomes stay in its history. Returns how many.
   */
  retryFailedRequests(batchId: string, scope: OwnerScope & RetryOptions = {}): Promise<number> {
    return batches.retryFailedRequests(
      this.pool,
      this.schema,
      this.events,
      batchId,
      scope.owner,
      scope,
      resolveRetryableStatuses(this.config.retryableStatuses),
    );
  }

  /**
   * Moves the batch's requests that can still be sent (pending, in flight, failed) to the upstreams
   * `options.router` gives now (default: this manager's upstreamRouter; null: each template's own
   * endpoint and key), as if the batch were created now. Requests in flight finish where they were
   * sent; a retry of theirs goes to the new route. Returns how many requests moved.
   */
  rerouteBatch(
    batchId: string,
    options: OwnerScope & { router?: ModelRouter | null; requireRoutes?: boolean } = {},
  ): Promise<number> {
    const router = options.router === undefined ? (this.config.upstreamRouter ?? null) : options.router;
    return rerouteBatch(
      this.pool,
      this.schema,
      this.events,
      batchId,
      options.owner,
      router,
      options.requireRoutes ?? false,
    );
  }

  /**
   * Where the batch's requests go, per route (upstream without credentials, key fingerprint, models),
   * how many live daemons can send them, and whether some wait because none can.
   */
  async getBatchUpstreams(batchId: string, scope: OwnerScope = {}): Promise<BatchUpstream[]> {
    const { id } = await batches.getBatch(this.pool, this.schema, batchId, scope.owner);
    return (await this.dashboardReads.upstreams([id])).get(id) ?? [];
  }

  /**
   * Deletes an ended message batch (Anthropic's API) and its input file: both leave every read at
   * once. InvalidStateError while it is processing; NotFoundError unless it is the owner's message batch.
   */
  deleteMessageBatch(batchId: string, scope: OwnerScope = {}): Promise<void> {
    return deleteEndedMessageBatch(this.pool, this.schema, batchId, scope.owner ?? null);
  }

  /** Ends the batch if nothing of it remains to do; returns whether this call ended it. */
  finalizeBatch(batchId: string): Promise<boolean> {
    return batches.finalizeBatch(this.pool, this.schema, batchId);
  }

  /**
   * Removes expired and deleted data now, in small transactions (src/db/purge.ts); with
   * `olderThanMs`, also batches finished longer ago (and input files as old that no batch uses).
   * Daemons run it in the background with the configured finishedBatchRetention.
   */
  purge(options: Omit<PurgeOptions, 'shouldStop'> = {}): Promise<PurgeReport> {
    return purge(this.pool, this.schema, options);
  }

  /**
   * Compresses the answers of ended batches now (src/db/compress.ts; default: every ended batch,
   * whatever compressAfterMs). Daemons run it in the background when compressFinishedBodies is on.
   */
  compressFinished(options: Omit<CompressOptions, 'shouldStop'> = {}): Promise<CompressReport> {
    return compressFinished(this.pool, this.schema, options);
  }

  /** What purge() with the same retention would remove now, removing nothing. */
  previewPurge(options: Pick<PurgeOptions, 'olderThanMs'> = {}): Promise<PurgeReport> {
    return previewPurge(this.pool, this.schema, options);
  }

  /**
   * Sets a model's in-flight limit for every daemon on this database (the model_limits row the
   * daemons' slot budgets are drawn from, src/db/sql/queue/budget.ts). Takes effect within one budget
   * interval (budgetIntervalMs, 250 ms by default): a raised limit is used at once; after a lowered
   * one no new request starts above it, and requests already in flight finish (never aborted), so
   * the total in flight falls to the new limit as they end. A limit set here is the model's own: a
   * daemon's default (defaultModelConcurrency) no longer applies to it.
   */
  async setModelConcurrency(model: string, concurrency: number): Promise<void> {
    checkModelConcurrency(model, concurrency);
    await this.pool.query(
      `INSERT INTO ${this.schema}.model_limits (model, concurrency, from_default) VALUES ($1, $2, false)
       ON CONFLICT (model) DO UPDATE SET concurrency = EXCLUDED.concurrency, from_default = false, updated_at = now()`,
      [model, concurrency],
    );
  }

  /**
   * Sets one model's requests and tokens per minute, held across all daemons on the database (each
   * sees it at its next budget rebalance, within budgetIntervalMs). A limit left out (or null) is
   * removed: the model is then paced by the upstream's headers, if it sends any, else by concurrency.
   */
  async setModelRateLimits(
    model: string,
    limits: { rpm?: number | null; tpm?: number | null },
  ): Promise<void> {
    checkModelRateLimits(model, limits);
    await this.pool.query(configureRateLimitsSql(this.schema), [
      [model],
      [limits?.rpm ?? null],
      [limits?.tpm ?? null],
      this.config.rateBurstSeconds,
    ]);
  }

  /**
   * Starts a daemon that claims and sends this database's requests, and (unless `webhooks.enabled`
   * is false) a webhook deliverer beside it, stopped with it (src/webhooks/delivery.ts).
   */
  async run(overrides: Partial<DaemonConfig> = {}): Promise<DaemonHandle> {
    const { startDaemon } = await import('../daemon/daemon.js');
    const config = resolveDaemonConfig({ ...this.config, ...overrides });
    checkRetryRules(config);
    const daemon = await startDaemon(this, config);
    if (this.webhooks.enabled === false) return daemon;
    const { startWebhookDeliverer } = await import('../webhooks/delivery.js');
    const deliverer = startWebhookDeliverer(this, config, this.webhooks);
    void daemon.done.then(() => deliverer.stop());
    return {
      id: daemon.id,
      done: daemon.done,
      async stop() {
        await Promise.all([deliverer.stop(), daemon.stop()]);
      },
    };
  }
}
