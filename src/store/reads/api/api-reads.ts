import type { Readable } from 'node:stream';
import type pg from 'pg';
import { messageBatchResultsSql } from '../../../db/sql/results/message-batch-results.js';
import type { BatchInfo, BatchStatus, BatchUpstream, FileInfo, Page } from '../../../domain/types.js';
import { countWaitingBatches } from '../../batches/batch-routes.js';
import type { ListBatchesOptions } from '../../batches/batches.js';
import { findFile, firstPathMismatch } from '../../files/files.js';
import { type ContentSource, openCopyLines, openFileContent } from '../../files/output-files.js';
import { listBatchesWithStatus } from './batch-page.js';
import { getMessageBatch, listMessageBatches, type MessageBatchPageOptions } from './message-batches.js';

/**
 * The read model of the Batch APIs (OpenAI's /v1 and Anthropic's Message Batches) on one database (a
 * pool and a quoted schema): the pages and streams the routes send, each one read. Scoped to an owner
 * where it takes one; what the owner cannot see is a NotFoundError.
 */
export class ApiReads {
  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    /** A daemon silent for longer is not counted among those who can send a route. */
    private readonly deadDaemonAfterMs: number,
  ) {}

  /** A page of batches, newest first, each with its status and upstreams (three queries for the page). */
  listBatches(
    options: ListBatchesOptions,
  ): Promise<Page<{ batch: BatchInfo; status: BatchStatus; upstreams: BatchUpstream[] }>> {
    return listBatchesWithStatus(this.pool, this.schema, {
      ...options,
      deadDaemonAfterMs: this.deadDaemonAfterMs,
    });
  }

  /** The first line of the file whose URL path differs from `path`, or undefined. */
  firstPathMismatch(fileId: string, path: string): Promise<{ line: number; path: string } | undefined> {
    return firstPathMismatch(this.pool, this.schema, fileId, path);
  }

  /** The owner's file as stored, unmeasured (enough to stream its content); NotFoundError otherwise. */
  storedFile(fileId: string, owner: string | null): Promise<FileInfo> {
    return findFile(this.pool, this.schema, fileId, owner);
  }

  /** A file's content as JSONL bytes streamed from PostgreSQL (a COPY holding one connection until read). */
  fileContent(file: ContentSource): Promise<Readable> {
    return openFileContent(this.pool, this.schema, file);
  }

  /** The owner's message batch, or NotFoundError (also for an OpenAI batch). */
  messageBatch(batchId: string, owner: string | null): Promise<BatchInfo> {
    return getMessageBatch(this.pool, this.schema, batchId, owner);
  }

  /** A page of the owner's message batches with their statuses. */
  listMessageBatches(
    options: MessageBatchPageOptions,
  ): Promise<{ data: { batch: BatchInfo; status: BatchStatus }[]; hasMore: boolean }> {
    return listMessageBatches(this.pool, this.schema, options);
  }

  /** A message batch's results JSONL streamed from PostgreSQL; the caller checks it has ended. */
  messageBatchResults(batchId: string): Promise<Readable> {
    return openCopyLines(this.pool, messageBatchResultsSql(this.schema, batchId));
  }

  /** Live batches whose pending requests no live daemon can send (the waiting-for-daemon gauge). */
  waitingBatches(): Promise<number> {
    return countWaitingBatches(this.pool, this.schema, this.deadDaemonAfterMs);
  }
}
