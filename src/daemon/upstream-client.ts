import { EventEmitter } from 'node:events';
import type { UpstreamClient, UpstreamRequest } from '../dispatch/interfaces.js';
import {
  isRateLimitHeader,
  parseRateLimitHeaders,
  type RateLimitInfo,
} from '../domain/rate-limit-headers.js';
import type { AttemptOutcome } from '../domain/retry.js';
import { reassembleIfStream, streamRequestBody } from './streams/reassemble.js';
import { Pool, type PoolOptions } from './undici-pool.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);
/** undici's error when an answer passes the pool's maxResponseSize (the daemon's maxResponseBytes). */
const TOO_LARGE_CODE = 'UND_ERR_RES_EXCEEDED_MAX_SIZE';

function header(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/**
 * An abort source for undici's `signal` option, which also takes an EventEmitter (for callers of
 * sendAbortable; the dispatcher now uses UndiciAttempt, which needs neither): an AbortSignal's listener, added and removed by undici for every
 * request, cost ≈10% of the HTTP path's CPU on loopback (20,000 requests, 64 in flight: 2.22–2.38 s
 * with the signal, 2.00–2.10 s without); an EventEmitter's costs next to nothing.
 */
export class AbortEmitter extends EventEmitter {
  aborted = false;
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.emit('abort');
  }
}

/**
 * One pass over undici's raw headers ([name, value, …] as Buffers): the request id and the
 * rate-limit headers (src/domain/rate-limit-headers.ts), first value of each. A name that cannot be
 * one of them (its first letter is not x, a or r) is skipped without decoding it, so an upstream
 * that sends no such headers costs one byte comparison per header.
 */
function scanHeaders(raw: Buffer[]): { requestId: string | null; rateLimit: RateLimitInfo | null } {
  let requestId: string | null = null;
  let limits: Record<string, string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!;
    const first = (n[0] ?? 0) | 0x20;
    if (first !== 0x78 && first !== 0x61 && first !== 0x72) continue;
    const name = n.toString('latin1').toLowerCase();
    if (name === 'x-request-id') {
      requestId ??= raw[i + 1]!.toString('latin1');
    } else if (isRateLimitHeader(name)) {
      limits ??= {};
      limits[name] ??= raw[i + 1]!.toString('latin1');
    }
  }
  const found = limits;
  return { requestId, rateLimit: found ? parseRateLimitHeaders((name) => found[name]) : null };
}

/**
 * One attempt through undici's dispatch API (the dispatcher's path for the default client): a
 * handler that collects the body chunks itself instead of `Pool.request`'s Readable body,
 * `body.text()` and an abort signal listener. It is also the attempt's abort handle. Measured on
 * bench/daemon-throughput: see UndiciUpstreamClient.start.
 */
export class UndiciAttempt {
  aborted = false;
  readonly outcome: Promise<AttemptOutcome>;
  private resolve!: (outcome: AttemptOutcome) => void;
  private abortRequest: ((err?: Error) => void) | null = null;
  private status = 0;
  private headers: Buffer[] = [];
  private chunks: Buffer[] = [];
  /** The cap the pool enforces (set by UndiciUpstreamClient.start), for the error message. */
  maxResponseBytes = 0;

  constructor() {
    this.outcome = new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const abort = this.abortRequest;
    if (abort) {
      this.abortRequest = null;
      abort(new Error('the attempt was aborted'));
    }
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.aborted) abort(new Error('the attempt was aborted'));
    else this.abortRequest = abort;
  }

  onHeaders(statusCode: number, headers: Buffer[]): boolean {
    if (statusCode >= 200) {
      this.status = statusCode;
      this.headers = headers;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    return true;
  }

  onComplete(): void {
    this.abortRequest = null;
    const chunks = this.chunks;
    let body =
      chunks.length === 1
        ? chunks[0]!.toString('utf8')
        : chunks.length === 0
          ? ''
          : Buffer.concat(chunks).toString('utf8');
    // As body.text() did: a leading byte order mark is not part of the text.
    if (body.charCodeAt(0) === 0xfeff) body = body.slice(1);
    if (this.status >= 200 && this.status < 300) {
      const streamed = reassembleIfStream(body, () => rawHeader(this.headers, 'content-type'));
      if (streamed && !streamed.ok) {
        this.resolve({ kind: 'error', code: streamed.code, message: streamed.message });
        return;
      }
      if (streamed) body = streamed.body;
    }
    const { requestId, rateLimit } = scanHeaders(this.headers);
    this.resolve({
      kind: 'http',
      status: this.status,
      body,
      upstreamRequestId: requestId,
      retryAfterMs: rateLimit?.retryAfterMs ?? null,
      rateLimit,
    });
  }

  onError(err: Error): void {
    this.abortRequest = null;
    this.chunks = [];
    this.resolve(errorOutcome(err, this, this.maxResponseBytes));
  }
}

export function errorOutcome(
  err: unknown,
  signal: { aborted: boolean },
  maxResponseBytes = 0,
): AttemptOutcome {
  if (signal.aborted) return { kind: 'error', code: 'aborted', message: 'the attempt was aborted' };
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code;
  if (code && TIMEOUT_CODES.has(code)) {
    return { kind: 'error', code: 'request_timeout', message: `upstream timed out (${code})` };
  }
  if (code === TOO_LARGE_CODE) {
    return {
      kind: 'error',
      code: 'response_too_large',
      message: `the upstream's answer was larger than maxResponseBytes (${maxResponseBytes} bytes); it was cut off there`,
    };
  }
  return {
    kind: 'error',
    code: 'connection_error',
    message: `upstream connection failed${code ? ` (${code})` : ''}: ${e?.message ?? String(err)}`,
  };
}

export class UndiciUpstreamClient implements UpstreamClient {
  /**
   * One keep-alive undici Pool per upstream origin. An Agent (which keeps such pools itself) cost
   * ≈12% more CPU per request on loopback (20,000 requests, 64 in flight: 2.29–2.32 s against
   * 2.03–2.11 s for Pool.request), and this process's one thread also drives the claims.
   */
  private readonly pools = new Map<string, Pool>();
  private readonly options: PoolOptions;
  private readonly maxResponseBytes: number;

  /**
   * `maxResponseBytes` (0: no cap) bounds one answer's body: undici's parser counts the bytes it
   * reads anyway and cuts the connection past the cap (its maxResponseSize), so the cap costs the
   * hot path nothing, and an endless or huge answer holds at most the cap in memory.
   */
  constructor(requestTimeoutMs: number, maxResponseBytes = 0) {
    this.maxResponseBytes = maxResponseBytes;
    this.options = {
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 10 * 60_000,
      // The daemon's own per-attempt timer bounds the whole attempt; these are backstops that must
      // not cut long generations short (undici's 300 s defaults would).
      headersTimeout: requestTimeoutMs,
      bodyTimeout: requestTimeoutMs,
      connect: { timeout: Math.min(requestTimeoutMs, 30_000) },
      ...(maxResponseBytes > 0 ? { maxResponseSize: maxResponseBytes } : {}),
    };
  }

  private pool(origin: string): Pool {
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, this.options);
      this.pools.set(origin, pool);
    }
    return pool;
  }

  send(request: UpstreamRequest, signal: AbortSignal): Promise<AttemptOutcome> {
    return this.sendAbortable(request, signal);
  }

  /**
   * Starts one attempt through the pool's dispatch API; the promise never rejects. The dispatcher's
   * path for this client. bench/daemon-throughput's zero-latency run (20,000 requests, 64 in flight),
   * alternating with Pool.request + body.text() + AbortEmitter: Node CPU 218/204/205 µs a request
   * before, 189/187/191 with this; 43.4/44.0/41.4% of raw undici's rate before, 49.2/45.9/45.3% after.
   */
  start(request: UpstreamRequest, attempt: UndiciAttempt): Promise<AttemptOutcome> {
    attempt.maxResponseBytes = this.maxResponseBytes;
    try {
      this.pool(request.origin).dispatch(
        {
          path: request.path,
          method: request.method as 'POST',
          headers: request.headers,
          body: request.method === 'GET' || request.method === 'DELETE' ? undefined : sentBody(request),
        },
        attempt,
      );
    } catch (err) {
      attempt.onError(err as Error);
    }
    return attempt.outcome;
  }

  /** send() with an AbortEmitter (or an AbortSignal). */
  async sendAbortable(request: UpstreamRequest, signal: AbortSignal | AbortEmitter): Promise<AttemptOutcome> {
    try {
      const res = await this.pool(request.origin).request({
        path: request.path,
        method: request.method as 'POST',
        headers: request.headers,
        body: request.method === 'GET' || request.method === 'DELETE' ? undefined : sentBody(request),
        signal,
      });
      let body = await res.body.text();
      if (res.statusCode >= 200 && res.statusCode < 300) {
        const streamed = reassembleIfStream(body, () => header(res.headers['content-type']));
        if (streamed && !streamed.ok)
          return { kind: 'error', code: streamed.code, message: streamed.message };
        if (streamed) body = streamed.body;
      }
      const rateLimit = parseRateLimitHeaders((name) => header(res.headers[name]));
      return {
        kind: 'http',
        status: res.statusCode,
        body,
        upstreamRequestId: header(res.headers['x-request-id']),
        retryAfterMs: rateLimit?.retryAfterMs ?? null,
        rateLimit,
      };
    } catch (err) {
      return errorOutcome(err, signal, this.maxResponseBytes);
    }
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }
}

/** The body as sent: a streamed chat completion or completion asks for its usage (streams/reassemble.ts). */
function sentBody(request: UpstreamRequest): string {
  return streamRequestBody(request.path, request.body);
}

/** The first value of one response header in undici's raw form; lower-case name. Read rarely. */
function rawHeader(raw: Buffer[], name: string): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toString('latin1').toLowerCase() === name) return raw[i + 1]!.toString('latin1');
  }
  return null;
}

/** A user-supplied base URL may end in /v1 (as OpenAI clients take it): the path carries /v1 here. */
export function normaliseBaseUrl(url: string): string {
  let u = url.trim();
  while (u.endsWith('/')) u = u.slice(0, -1);
  if (u.endsWith('/v1')) u = u.slice(0, -3);
  while (u.endsWith('/')) u = u.slice(0, -1);
  return u;
}

/** Splits a base URL into the origin undici pools by and a path prefix (for upstreams under a path). */
export function splitBaseUrl(base: string): { origin: string; prefix: string } {
  const u = new URL(normaliseBaseUrl(base));
  const prefix = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
  return { origin: u.origin, prefix };
}
