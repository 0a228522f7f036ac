import { EventEmitter } from 'node:events';
import { Pool } from 'undici';
import { type AttemptOutcome, parseRetryAfter } from '../domain/retry.js';

/**
 * How the daemon talks to upstreams: one attempt in, one outcome out. The default keeps an undici
 * keep-alive Pool per origin (`request()`: 28k req/s on loopback against 4.1k for fetch,
 * REFERENCE §5). Tests or callers may supply another implementation through the daemon config.
 */
export interface UpstreamRequest {
  /** Upstream base URL (no /v1) + the template's path. */
  origin: string;
  path: string;
  method: string;
  headers: Record<string, string>;
  body: string;
}

export interface UpstreamClient {
  /**
   * Sends one attempt. Resolves with the HTTP answer or a non-HTTP error outcome (never rejects for
   * upstream trouble). When `signal` aborts, resolves with {kind:'error', code:'aborted'}.
   */
  send(request: UpstreamRequest, signal: AbortSignal): Promise<AttemptOutcome>;
  close(): Promise<void>;
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

function header(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/**
 * An abort source for undici's `signal` option, which also takes an EventEmitter. The dispatcher uses
 * it with the default client: an AbortSignal's listener, added and removed by undici for every
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

export function errorOutcome(err: unknown, signal: { aborted: boolean }): AttemptOutcome {
  if (signal.aborted) return { kind: 'error', code: 'aborted', message: 'the attempt was aborted' };
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code;
  if (code && TIMEOUT_CODES.has(code)) {
    return { kind: 'error', code: 'request_timeout', message: `upstream timed out (${code})` };
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
  private readonly options: Pool.Options;

  constructor(requestTimeoutMs: number) {
    this.options = {
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 10 * 60_000,
      // The daemon's own per-attempt timer bounds the whole attempt; these are backstops that must
      // not cut long generations short (undici's 300 s defaults would).
      headersTimeout: requestTimeoutMs,
      bodyTimeout: requestTimeoutMs,
      connect: { timeout: Math.min(requestTimeoutMs, 30_000) },
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

  /** send() with an AbortEmitter (or an AbortSignal): the dispatcher's path for this client. */
  async sendAbortable(request: UpstreamRequest, signal: AbortSignal | AbortEmitter): Promise<AttemptOutcome> {
    try {
      const res = await this.pool(request.origin).request({
        path: request.path,
        method: request.method as 'POST',
        headers: request.headers,
        body: request.method === 'GET' || request.method === 'DELETE' ? undefined : request.body,
        signal,
      });
      const body = await res.body.text();
      return {
        kind: 'http',
        status: res.statusCode,
        body,
        upstreamRequestId: header(res.headers['x-request-id']),
        retryAfterMs: parseRetryAfter(
          header(res.headers['retry-after-ms']),
          header(res.headers['retry-after']),
        ),
      };
    } catch (err) {
      return errorOutcome(err, signal);
    }
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }
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
