import { createWriteStream, openAsBlob } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { UsageError } from '../config/usage-error.js';
import type { BatchObject as ServerBatchObject } from '../server/objects.js';
import type { ModelUsageObject, UsageObject } from '../server/usage-object.js';

/** The parts of OpenAI's batch object the CLI shows. */
export interface BatchObject {
  id: string;
  status: string;
  endpoint: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  completed_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  errors: { data: { code: string; message: string; line?: number | null }[] } | null;
  /** Absent from servers older than usage accounting. */
  usage?: UsageObject;
  model_usage?: ModelUsageObject[];
  cost?: number | null;
  /** Where its requests go (a fusillade server's field; absent from other servers). */
  upstreams?: ServerBatchObject['upstreams'];
}

export const FINAL_STATUSES = new Set(['completed', 'failed', 'expired', 'cancelled']);

/** A small client of a fusillade server's OpenAI-compatible /v1 API (fetch, no SDK). */
export class ApiClient {
  private readonly base: string;
  private readonly apiKey: string;

  constructor(server: string, apiKey: string | undefined) {
    if (!apiKey) {
      throw new UsageError(
        '--api-key is required (or FUSILLADE_API_KEY); create one with `fusillade keys create --owner NAME`',
      );
    }
    this.base = `${server.replace(/\/+$/, '')}/v1`;
    this.apiKey = apiKey;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: { 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return (await res.json()) as T;
  }

  /** Streams the file to the server as multipart (a file-backed Blob: never read into memory). */
  async uploadBatchFile(path: string): Promise<{ id: string }> {
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', await openAsBlob(path, { type: 'application/jsonl' }), basename(path));
    const res = await this.fetch('/files', { method: 'POST', body: form });
    return (await res.json()) as { id: string };
  }

  /** POSTs a JSON body produced piece by piece (streamed: never whole in memory); returns the answer. */
  async postStream<T>(path: string, pieces: AsyncIterable<string>): Promise<T> {
    const body = Readable.toWeb(Readable.from(pieces)) as unknown as ReadableStream;
    const res = await this.fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      duplex: 'half',
    } as RequestInit);
    return (await res.json()) as T;
  }

  /** Writes a file's content to `path` (via a temporary name, so no half file is left). */
  async downloadFile(fileId: string, path: string): Promise<void> {
    await this.download(`/files/${encodeURIComponent(fileId)}/content`, path);
  }

  /** Writes the answer of GET `from` (a /v1 path) to `path`, via a temporary name. */
  async download(from: string, path: string): Promise<void> {
    const res = await this.fetch(from, { method: 'GET' });
    const tmp = `${path}.partial-${process.pid}`;
    try {
      await pipeline(Readable.fromWeb(res.body as WebReadableStream), createWriteStream(tmp));
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${this.apiKey}` },
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new UsageError(
        `cannot reach the server ${this.base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
        1,
      );
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      let message = text.slice(0, 300);
      try {
        message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
      } catch {
        // not JSON: keep the text
      }
      throw new UsageError(`server answered ${res.status}: ${message}`, 1);
    }
    return res;
  }
}
