import type http from 'node:http';
import type { Socket } from 'node:net';
import { ApiError, sendError } from './http.js';

/**
 * Deadlines on inbound requests, so that a client cannot hold a socket (and what its handler holds)
 * by sending slowly or not at all:
 *
 * - headers: a request whose headers are not complete within `headersTimeoutMs` is answered 408 by
 *   Node itself (`server.headersTimeout`, checked every second instead of Node's 30 s);
 * - idleness: a socket that neither receives nor sends for `idleTimeoutMs` while its request body
 *   is still due is answered 408 `request_timeout` and closed (a Content-Length larger than the
 *   body sent, a body that stops arriving). A request already received whose answer is being
 *   prepared is left alone (a large batch insert can take a while), unless its answer is stuck
 *   because the client stopped reading: that socket is closed.
 *
 * The deadline is on progress, not on total time: a slow but steady upload or download keeps
 * working however long it takes (every byte restarts the clock). Uploads keep their own idle
 * deadline (`uploadIdleTimeoutMs`, src/server/upload.ts); a route that sets one on its request
 * (`req.setTimeout`) handles its own timeout.
 */
export interface InboundDeadlines {
  /** Time to receive a request's headers; default 30 s. */
  headersTimeoutMs: number;
  /** Time without any progress while a request's body is due or its answer is stuck; default 30 s. */
  idleTimeoutMs: number;
}

export const DEFAULT_INBOUND_DEADLINES: InboundDeadlines = {
  headersTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
};

/** A request and its answer, by socket: what the idle deadline looks at. */
const current = new WeakMap<Socket, { req: http.IncomingMessage; res: http.ServerResponse }>();

/** Registers a request (call first thing in the request listener). */
export function trackRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const socket = req.socket;
  current.set(socket, { req, res });
  res.once('finish', () => readBefore.set(socket, socket.bytesRead));
}
/** Bytes a socket had read when its last answer was finished. */
const readBefore = new WeakMap<Socket, number>();

/** Whether this request was answered 408 by the idle deadline (its handler's later failure is moot). */
export function timedOut(res: http.ServerResponse): boolean {
  return answered.has(res);
}
const answered = new WeakSet<http.ServerResponse>();

/**
 * Applies the deadlines to a server. `http.createServer` must have been given
 * `connectionsCheckingInterval` (see serverOptions) for the headers deadline to be checked often.
 */
export function applyInboundDeadlines(server: http.Server, deadlines: InboundDeadlines): void {
  // Node answers 408 itself when the headers are late; requestTimeout (total time) stays off.
  server.headersTimeout = deadlines.headersTimeoutMs;
  server.requestTimeout = 0;
  // The socket's inactivity timer: Node re-arms it with this value for every request.
  server.timeout = deadlines.idleTimeoutMs;
  server.on('timeout', (socket: Socket) => {
    const call = current.get(socket);
    if (!call || call.res.writableFinished) {
      // Between requests. Bytes of a next request's head arrived: its headers are late (Node's own
      // 408 for this comes at the same time, so it is sent here); else an idle keep-alive socket,
      // closed as Node does without a listener.
      if (socket.bytesRead > (readBefore.get(socket) ?? 0) && socket.writable) {
        socket.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        setTimeout(() => socket.destroy(), 2000).unref();
      } else socket.destroy();
      return;
    }
    const { req, res } = call;
    if (!req.complete) {
      if (req.listenerCount('timeout') > 0) return; // the route keeps its own deadline (uploads)
      if (res.headersSent) {
        socket.destroy();
        return;
      }
      answered.add(res);
      sendError(
        res,
        new ApiError(
          408,
          `The request body stopped arriving: nothing was received for ${deadlines.idleTimeoutMs} ms.`,
          {
            code: 'request_timeout',
            headers: { connection: 'close' },
          },
        ),
      );
      // The unread rest of the body cannot be skipped: the connection goes once the answer is out.
      res.once('finish', () => socket.destroySoon());
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    // The answer is stuck behind a client that stopped reading it.
    if (res.writableNeedDrain) socket.destroy();
  });
}

/** Options for http.createServer: how often Node checks the headers deadline. */
export function serverOptions(deadlines: InboundDeadlines): http.ServerOptions {
  return { connectionsCheckingInterval: Math.max(100, Math.min(1000, deadlines.headersTimeoutMs / 4)) };
}
