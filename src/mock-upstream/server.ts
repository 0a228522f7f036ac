import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { PrefixCache, type PrefixCacheOptions } from './prefix-cache.js';
import { MockRateLimiter, type MockRateLimits } from './rate-limits.js';
import { mockRequestId, okBody, okObject } from './responses.js';
import { streamEvents, wantsStream } from './streams.js';

/**
 * A fast OpenAI-compatible upstream on loopback for tests, benchmarks and `fusillade mock-upstream`.
 * node:http with keep-alive; every behaviour a real LLM upstream shows (429 with retry-after, 5xx,
 * resets, hangs, slow bodies, non-JSON) can be scripted per request with setBehaviour().
 */

/** What the behaviour function sees of one request. */
export interface MockRequestInfo {
  method: string;
  path: string;
  model: string;
  /** From the X-Fusillade-Custom-Id header, else the body's custom_id, else null. */
  customId: string | null;
  /** 1 for the first request with this custom id, 2 for the second, … */
  attemptNo: number;
  /** The raw request body. */
  body: string;
  headers: http.IncomingHttpHeaders;
}

export type MockBehaviour =
  | { kind: 'ok'; delayMs?: number }
  | {
      kind: 'status';
      status: number;
      body?: string | object;
      headers?: Record<string, string>;
      delayMs?: number;
    }
  /** Destroys the socket without answering. */
  | { kind: 'reset'; delayMs?: number }
  /** Never answers (until the client gives up or the server closes). */
  | { kind: 'hang' }
  /** Answers normally after `ms`. */
  | { kind: 'delay'; ms: number }
  /** Sends the headers at once, then the body in `chunks` pieces `intervalMs` apart. */
  | { kind: 'trickle'; chunks?: number; intervalMs: number }
  /** 200 with a body that is not JSON. */
  | { kind: 'not-json' }
  /** 200 with a valid chat completion of about `bytes` bytes (its content padded), streamed. */
  | { kind: 'large'; bytes: number }
  /** 200 whose body never ends: JSON-looking bytes as fast as the client reads them, until it hangs up. */
  | { kind: 'endless' }
  /**
   * A streamed answer (the line asked for `"stream": true`) broken after `events` of its events: the
   * connection is destroyed (`cut`), or the answer ends cleanly without its last events (`truncate`).
   */
  | { kind: 'stream-break'; events?: number; how: 'cut' | 'truncate' };

export type BehaviourFn = (req: MockRequestInfo) => MockBehaviour | Promise<MockBehaviour>;

export interface RecordedRequest {
  method: string;
  path: string;
  model: string;
  customId: string | null;
  attemptNo: number;
  headers: http.IncomingHttpHeaders;
  /** Kept unless the mock was started with `recordBodies: false`. */
  body: string | null;
  /** Date.now() when the request's body had arrived. */
  receivedAt: number;
  /** Date.now() when the answer ended (or the socket was closed); null while open. */
  endedAt: number | null;
  /** What the mock did. */
  outcome: MockBehaviour['kind'];
}

export interface MockUpstreamOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  /** Loopback by default. */
  host?: string;
  /** Delay before every default answer. */
  latencyMs?: number;
  /** Keep every request in `requests` (default true); off for long benchmarks. */
  record?: boolean;
  /** Keep request bodies in the records (default true). */
  recordBodies?: boolean;
  /**
   * Enforce requests and tokens per minute per model as a provider does (./rate-limits.ts): limit
   * headers on every answer, 429 with retry-after-ms when over. Counts are served at GET /__mock/stats.
   */
  rateLimits?: MockRateLimits;
  /** A prompt cache (./prefix-cache.ts): hits wait its hitLatencyMs; counts also at /__mock/stats. */
  prefixCache?: PrefixCacheOptions;
}

export interface MockUpstream {
  /** Base URL without /v1, e.g. http://127.0.0.1:40123 */
  readonly url: string;
  readonly port: number;
  /** Requests in arrival order (when recording). */
  readonly requests: RecordedRequest[];
  /** Requests currently open, per model and in total. */
  readonly inFlight: { total: number; byModel: Map<string, number> };
  /** Highest number of requests open at once, per model and in total. */
  readonly maxInFlight: { total: number; byModel: Map<string, number> };
  /** How many requests arrived per custom id. */
  readonly countsByCustomId: Map<string, number>;
  /** Total requests received. */
  readonly received: number;
  /** The rate limiter when started with `rateLimits`. */
  readonly rateLimiter: MockRateLimiter | null;
  /** The prompt cache when started with `prefixCache`. */
  readonly prefixCache: PrefixCache | null;
  setBehaviour(fn: BehaviourFn | null): void;
  setLatency(ms: number): void;
  /** Forgets records, counts and maxima (not the behaviour). */
  reset(): void;
  close(): Promise<void>;
}

const JSON_HEADERS = { 'content-type': 'application/json' };
/** Padding for the large and endless answers. */
const FILLER = Buffer.alloc(64 * 1024, 'x');

function modelOf(parsed: unknown): string {
  const model = (parsed as { model?: unknown } | null)?.model;
  return typeof model === 'string' ? model : '';
}

function headerValue(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

export async function startMockUpstream(options: MockUpstreamOptions = {}): Promise<MockUpstream> {
  const record = options.record ?? true;
  const recordBodies = options.recordBodies ?? true;
  let latencyMs = options.latencyMs ?? 0;
  let behaviour: BehaviourFn | null = null;
  const requests: RecordedRequest[] = [];
  const inFlight = { total: 0, byModel: new Map<string, number>() };
  const maxInFlight = { total: 0, byModel: new Map<string, number>() };
  const countsByCustomId = new Map<string, number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let received = 0;
  const limiter = options.rateLimits ? new MockRateLimiter(options.rateLimits) : null;
  const cache = options.prefixCache ? new PrefixCache(options.prefixCache) : null;

  const later = (ms: number, fn: () => void) => {
    if (ms <= 0) return fn();
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, body: string) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/__mock/stats' && req.method === 'GET') {
      res.writeHead(200, JSON_HEADERS);
      const stats = { received, rateLimits: limiter?.stats() ?? null, prefixCache: cache?.stats() ?? null };
      res.end(JSON.stringify(stats));
      return;
    }
    let parsed: unknown = null;
    try {
      parsed = body.length > 0 ? JSON.parse(body) : null;
    } catch {
      parsed = null;
    }
    const model = modelOf(parsed);
    const customId =
      headerValue(req.headers['x-fusillade-custom-id']) ??
      ((parsed as { custom_id?: unknown } | null)?.custom_id as string | undefined) ??
      null;
    const attemptNo = customId === null ? 1 : (countsByCustomId.get(customId) ?? 0) + 1;
    if (customId !== null) countsByCustomId.set(customId, attemptNo);
    received++;

    const modelCount = (inFlight.byModel.get(model) ?? 0) + 1;
    inFlight.byModel.set(model, modelCount);
    inFlight.total++;
    if (modelCount > (maxInFlight.byModel.get(model) ?? 0)) maxInFlight.byModel.set(model, modelCount);
    if (inFlight.total > maxInFlight.total) maxInFlight.total = inFlight.total;

    // A request stops counting as in flight when the mock ends its answer or when its connection
    // closes, whichever comes first; both are watched from here, before the behaviour is asked: a
    // behaviour may hold the request (await), and a client that gives up meanwhile (abort, timeout)
    // has closed it. Watched only after the behaviour, such a request counted until the behaviour
    // returned, and then for ever ('close' had been emitted already).
    let entry: RecordedRequest | null = null;
    let endedAt: number | null = null;
    const finish = () => {
      if (endedAt !== null) return;
      endedAt = Date.now();
      const n = (inFlight.byModel.get(model) ?? 1) - 1;
      if (n === 0) inFlight.byModel.delete(model);
      else inFlight.byModel.set(model, n);
      inFlight.total--;
      if (entry) entry.endedAt = endedAt;
    };
    res.on('close', finish);
    // An answer stops counting as in flight when the mock ends it, not at its 'close' event: that
    // comes after the write completes, and on a loaded machine a client can read the answer and
    // another daemon's next request can arrive before it, which counted one request too many.
    const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
    res.end = ((...args: unknown[]) => {
      finish();
      return end(...args);
    }) as typeof res.end;

    const info: MockRequestInfo = {
      method: req.method ?? 'GET',
      path,
      model,
      customId,
      attemptNo,
      body,
      headers: req.headers,
    };
    const cached = cache?.lookup(parsed) === 'hit';
    let action: MockBehaviour = { kind: 'ok' };
    // Rate limits first, as a provider admits before it works: a refused request is answered at once.
    let limitHeaders: Record<string, string> = {};
    const admission = limiter ? limiter.admit(model, limiter.cost(body, path)) : null;
    if (admission) limitHeaders = admission.headers;
    if (admission && !admission.ok) {
      action = { kind: 'status', status: 429, body: admission.body, headers: admission.headers, delayMs: 0 };
    } else if (behaviour) {
      try {
        action = await behaviour(info);
      } catch (err) {
        action = { kind: 'status', status: 500, body: { error: { message: String(err) } } };
      }
    }
    entry = record
      ? {
          method: info.method,
          path,
          model,
          customId,
          attemptNo,
          headers: req.headers,
          body: recordBodies ? body : null,
          receivedAt: Date.now(),
          endedAt,
          outcome: action.kind,
        }
      : null;
    if (entry) requests.push(entry);

    const requestId = mockRequestId();
    const streamed = wantsStream(path, parsed);
    /** A streamed answer's events, sent apart; `keep` of them, then cut or truncated. */
    const sendStream = (keep = Number.POSITIVE_INFINITY, how: 'cut' | 'truncate' = 'truncate') => {
      if (res.destroyed) return;
      const events = streamEvents(path, okObject(path, model, parsed), parsed);
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-request-id': requestId,
        ...limitHeaders,
      });
      const sent = events.slice(0, keep);
      for (const e of sent) res.write(e);
      if (sent.length === events.length || how === 'truncate') res.end();
      else setImmediate(() => req.socket.destroy());
    };
    const sendOk = () => {
      if (res.destroyed) return;
      if (streamed) return sendStream();
      res.writeHead(200, { ...JSON_HEADERS, 'x-request-id': requestId, ...limitHeaders });
      res.end(okBody(path, model, parsed));
    };

    switch (action.kind) {
      case 'ok':
        return later(action.delayMs ?? (cached ? cache!.hitLatencyMs : latencyMs), sendOk);
      case 'delay':
        return later(action.ms, sendOk);
      case 'status': {
        const { status, headers } = action;
        const payload =
          action.body === undefined
            ? JSON.stringify({ error: { message: `mock status ${status}`, type: 'mock_error', code: null } })
            : typeof action.body === 'string'
              ? action.body
              : JSON.stringify(action.body);
        return later(action.delayMs ?? latencyMs, () => {
          if (res.destroyed) return;
          res.writeHead(status, { ...JSON_HEADERS, 'x-request-id': requestId, ...limitHeaders, ...headers });
          res.end(payload);
        });
      }
      case 'reset':
        return later(action.delayMs ?? 0, () => req.socket.destroy());
      case 'hang':
        return;
      case 'not-json':
        return later(latencyMs, () => {
          if (res.destroyed) return;
          res.writeHead(200, { 'content-type': 'text/html', 'x-request-id': requestId });
          res.end('<html>bad gateway page</html>');
        });
      case 'trickle': {
        const text = okBody(path, model, parsed);
        const chunks = Math.max(1, action.chunks ?? 10);
        const size = Math.ceil(text.length / chunks);
        res.writeHead(200, { ...JSON_HEADERS, 'x-request-id': requestId });
        let offset = 0;
        const step = () => {
          if (res.destroyed) return;
          res.write(text.slice(offset, offset + size));
          offset += size;
          if (offset >= text.length) res.end();
          else later(action.intervalMs, step);
        };
        return later(action.intervalMs, step);
      }
      case 'stream-break':
        return later(latencyMs, () => sendStream(action.events ?? 2, action.how));
      case 'large':
      case 'endless': {
        res.writeHead(200, { ...JSON_HEADERS, 'x-request-id': requestId });
        const head = `{"id":"chatcmpl-mock-large","object":"chat.completion","model":${JSON.stringify(model)},"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"`;
        const tail = '"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}';
        let left = action.kind === 'large' ? Math.max(0, action.bytes - head.length - tail.length) : Infinity;
        res.write(head);
        // Written as fast as the client reads (back-pressure), so the mock holds one piece at a time.
        const pump = () => {
          while (left > 0 && !res.destroyed) {
            const n = Math.min(left, FILLER.length);
            left -= n;
            if (!res.write(n === FILLER.length ? FILLER : FILLER.subarray(0, n))) {
              res.once('drain', pump);
              return;
            }
          }
          if (!res.destroyed) res.end(tail);
        };
        return pump();
      }
    }
  };

  const server = http.createServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      void handle(
        req,
        res,
        parts.length === 1 ? parts[0]!.toString('utf8') : Buffer.concat(parts).toString('utf8'),
      );
    });
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
  });

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}`,
    port,
    requests,
    inFlight,
    maxInFlight,
    countsByCustomId,
    get received() {
      return received;
    },
    rateLimiter: limiter,
    prefixCache: cache,
    setBehaviour(fn) {
      behaviour = fn;
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    reset() {
      requests.length = 0;
      countsByCustomId.clear();
      maxInFlight.total = inFlight.total;
      maxInFlight.byModel.clear();
      for (const [model, n] of inFlight.byModel) maxInFlight.byModel.set(model, n);
      received = 0;
      limiter?.reset();
      cache?.reset();
    },
    close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
