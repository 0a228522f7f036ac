import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Semaphore } from '../daemon/semaphore.js';
import type { UpstreamRouter } from '../dispatch/config.js';
import type { ModelPrice } from '../domain/usage.js';
import type { PostgresRequestManager } from '../manager/request-manager.js';
import type { ServerMetrics } from './metrics.js';

/** What every API route handler gets: the manager, limits, and a deadline for database calls. */
export interface ApiContext {
  manager: PostgresRequestManager;
  router: UpstreamRouter;
  metrics: ServerMetrics;
  maxUploadBytes: number;
  maxLinesPerFile: number;
  /** Most embedding inputs across the lines of a /v1/embeddings file. */
  maxEmbeddingInputsPerFile: number;
  /** Bytes of validated lines read before an upload takes a database connection. */
  uploadPreBufferBytes: number;
  /** Uploads streaming into the database at once (each holds a pooled connection). */
  uploadSlots: Semaphore;
  /** An upload that sends nothing for this long is cut off (408). */
  uploadIdleTimeoutMs: number;
  /** Prices per million tokens by model (models.MODEL.price): batches show their cost. */
  prices: Readonly<Record<string, ModelPrice>>;
  /** The completion windows the Batch API accepts; null: any valid window. */
  completionWindows: readonly string[] | null;
  /** Largest JSON request body accepted on the JSON routes. */
  maxJsonBytes: number;
  /** Largest message batch creation body (Anthropic: 256 MB). */
  maxMessageBatchBytes: number;
  /** Most requests in one message batch (Anthropic: 100,000). */
  maxMessageBatchRequests: number;
  /** Bounds a database call: past the deadline the request gets a 503 instead of hanging. */
  db<T>(work: Promise<T>): Promise<T>;
  log(entry: Record<string, unknown>): void;
}

/** One authenticated API request. */
export interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  /** Path parameters in pattern order. */
  params: string[];
  query: URLSearchParams;
  owner: string;
  requestId: string;
}

export type Handler = (ctx: ApiContext, call: Call) => Promise<void>;
