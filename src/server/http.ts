import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** JSON answers and the OpenAI error envelope, shared by the API routes and the dashboard. */

export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  /** Extra fields for the error object (e.g. the input line of a validation error). */
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    message: string,
    options: {
      type?: string;
      code?: string | null;
      param?: string | null;
      extra?: Record<string, unknown>;
      headers?: Record<string, string>;
    } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = options.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
    this.code = options.code ?? null;
    this.param = options.param ?? null;
    this.extra = options.extra ?? {};
    this.headers = options.headers ?? {};
  }

  envelope(): { error: Record<string, unknown> } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code, ...this.extra },
    };
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  // Already answered (a 503 after the deadline, and now the late result): drop it.
  if (res.writableEnded) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  // 4xx answers are final: tell the openai client not to retry them.
  if (status >= 400 && status < 500) res.setHeader('x-should-retry', 'false');
  const linger = status === 413 && res.req !== undefined && !res.req.complete;
  for (const [k, v] of Object.entries(headers)) {
    if (!(linger && k.toLowerCase() === 'connection')) res.setHeader(k, v);
  }
  if (linger) {
    // The request's socket, taken now: Node detaches it from the request once the answer is sent.
    const { req } = res;
    const socket = req.socket;
    res.once('finish', () => lingerThenClose(req, socket));
  }
  res.end(text);
}

/** How long a refused body may go on arriving (and is discarded) before its connection is cut. */
export const LINGER_MS = 10_000;

/**
 * A 413 refuses a body that is still being sent. Closing at once would make the kernel answer the
 * client's next bytes with a reset, and a client still writing (the openai SDK's upload) then loses
 * the 413 it had not read yet and reports a connection error. So the rest of the body is read and
 * discarded (Node's server does that for an answered request it keeps alive) for at most LINGER_MS,
 * then the connection is cut; a client that sends the whole body keeps a usable connection.
 */
function lingerThenClose(req: IncomingMessage, socket: Socket | null): void {
  if (req.complete || socket === null || socket.destroyed) return;
  const cut = setTimeout(() => socket.destroy(), LINGER_MS);
  cut.unref();
  req.once('end', () => clearTimeout(cut));
  socket.once('close', () => clearTimeout(cut));
}

export function sendError(res: ServerResponse, err: ApiError): void {
  sendJson(res, err.status, err.envelope(), err.headers);
}

/** Reads a JSON request body of at most `limit` bytes; an empty body reads as {}. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'The request body is not valid JSON.', { code: 'invalid_json' });
  }
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, `The request body is larger than ${limit} bytes.`, {
    code: 'request_too_large',
    headers: { connection: 'close' },
  });
}
