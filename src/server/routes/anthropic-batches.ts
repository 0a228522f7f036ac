import type { IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { withoutStatementDeadline } from '../../db/statement-deadline.js';
import { NotFoundError, ValidationError } from '../../domain/errors.js';
import {
  MESSAGE_BATCH_WINDOW,
  MESSAGES_PATH,
  validateMessageBatchRequest,
} from '../../domain/message-batch.js';
import { RequestsArrayParser } from '../../domain/requests-array-parser.js';
import type { TemplateItem } from '../../store/files/files.js';
import { type MessageBatchObject, messageBatchObject } from '../anthropic-objects.js';
import type { ApiContext, Call } from '../context.js';
import { ApiError, sendJson } from '../http.js';
import { messageBatchId, parseMessageBatchId } from '../ids.js';
import { preBuffer } from '../pre-buffer.js';
import { intParam } from './params.js';

/**
 * Anthropic's Message Batches API (POST/GET /v1/messages/batches, GET/DELETE …/{id}, POST
 * …/{id}/cancel, GET …/{id}/results) over the same store and daemon as the OpenAI routes. Errors
 * leave in Anthropic's envelope (server.ts picks it for every path under /v1/messages).
 */

export function noSuchMessageBatch(id: string): ApiError {
  return new ApiError(404, `No such message batch: ${id}`, { code: 'not_found' });
}

/** The absolute base URL the client reached this server by, for results_url. */
function requestBase(req: IncomingMessage): string {
  const proto = req.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http';
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  return `${proto}://${host}`;
}

/** The owner's message batch by its msgbatch_ id, or 404. */
async function ownBatch(ctx: ApiContext, call: Call): Promise<{ id: string; uuid: string }> {
  const id = call.params[0]!;
  const uuid = parseMessageBatchId(id);
  if (!uuid) throw noSuchMessageBatch(id);
  await ctx.db(ctx.manager.apiReads.messageBatch(uuid, call.owner)).catch(notFound(id));
  return { id, uuid };
}

function notFound(id: string): (err: unknown) => never {
  return (err) => {
    throw err instanceof NotFoundError ? noSuchMessageBatch(id) : err;
  };
}

/** `afterCommit`: read without the database deadline, as batches.ts's batchAnswer says why. */
async function answer(
  ctx: ApiContext,
  call: Call,
  uuid: string,
  options: { afterCommit?: boolean } = {},
): Promise<MessageBatchObject> {
  const scope = { owner: call.owner };
  const read = () =>
    Promise.all([ctx.manager.getBatch(uuid, scope), ctx.manager.getBatchStatus(uuid, scope)]);
  const [batch, status] = options.afterCommit ? await withoutStatementDeadline(read) : await ctx.db(read());
  return messageBatchObject(batch, status, requestBase(call.req));
}

/**
 * POST /v1/messages/batches: the body is streamed through RequestsArrayParser, each request
 * validated (validateMessageBatchRequest) and routed by its model as it arrives, into an input file
 * (COPY, one transaction: the first bad request stores nothing), then a batch of endpoint
 * /v1/messages with a 24 h window; the file is removed again when the batch cannot be made. Up to
 * uploadPreBufferBytes of requests are read before a database connection is taken; a larger body
 * holds one while it arrives, at most uploadSlots such bodies at once (as uploads do).
 */
export async function createMessageBatch(ctx: ApiContext, call: Call): Promise<void> {
  const { req } = call;
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > ctx.maxMessageBatchBytes) {
    throw new ApiError(
      413,
      `The body declares ${declared} bytes; a message batch is limited to ${ctx.maxMessageBatchBytes}.`,
      {
        code: 'request_too_large',
        headers: { connection: 'close' },
      },
    );
  }
  const parser = new RequestsArrayParser(ctx.maxMessageBatchBytes);
  const toTemplate = templateMaker(ctx);
  async function* templates(): AsyncGenerator<TemplateItem> {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      for (const text of parser.push(chunk)) yield toTemplate(text);
    }
    parser.end();
  }
  const owner = call.owner;
  const { manager } = ctx;
  const stream = templates();
  let fileUuid: string;
  try {
    const { whole, all: everything } = await preBuffer(stream, ctx.uploadPreBufferBytes);
    const store = () =>
      manager.createFileStream('message_batch_requests.jsonl', null, everything(), {
        owner,
        purpose: 'batch',
      });
    fileUuid = await (whole ? store() : ctx.uploadSlots.run(store));
  } catch (err) {
    // Discard the rest of the body so the error answer reaches the client.
    req.resume();
    throw err;
  } finally {
    await stream.return(undefined);
  }
  let uuid: string;
  try {
    uuid = await manager.createBatch(fileUuid, {
      owner,
      endpoint: MESSAGES_PATH,
      completionWindow: MESSAGE_BATCH_WINDOW,
      router: ctx.router,
      requireRoutes: true,
    });
  } catch (err) {
    await manager.deleteFile(fileUuid, { owner }).catch(() => {});
    throw err;
  }
  ctx.log({ msg: 'message batch created', requestId: call.requestId, owner, batch: messageBatchId(uuid) });
  ctx.metrics.batchesCreated.inc({ api: 'anthropic' });
  ctx.metrics.batchRequestsCreated.inc({ api: 'anthropic' }, toTemplate.count);
  sendJson(call.res, 200, await answer(ctx, call, uuid, { afterCommit: true }));
}

/**
 * Turns each request's text into a template routed by its model (the upstream key is resolved at
 * dispatch), checking it as Anthropic does; `count` is how many it made.
 */
function templateMaker(ctx: ApiContext): ((text: string) => TemplateItem) & { count: number } {
  const seen = new Set<string>();
  const endpoints = new Map<string, string | undefined>();
  const make = (text: string): TemplateItem => {
    const i = make.count;
    if (i >= ctx.maxMessageBatchRequests) {
      throw refused('requests', `requests: a batch holds at most ${ctx.maxMessageBatchRequests} requests`);
    }
    let item: unknown;
    try {
      item = JSON.parse(text);
    } catch {
      throw refused(`requests.${i}`, `requests.${i}: not valid JSON`);
    }
    const r = validateMessageBatchRequest(item, i, seen);
    if (!endpoints.has(r.model)) endpoints.set(r.model, ctx.router.route(r.model)?.endpoint);
    const endpoint = endpoints.get(r.model);
    if (!endpoint) {
      throw refused(
        `requests.${i}.params.model`,
        `requests.${i}.params.model: no upstream is configured for model ${JSON.stringify(r.model)}`,
        'unknown_model',
      );
    }
    make.count = i + 1;
    return {
      endpoint,
      method: 'POST',
      path: MESSAGES_PATH,
      body: r.body,
      model: r.model,
      apiKey: '',
      customId: r.customId,
      lineNumber: i + 1,
    };
  };
  make.count = 0;
  return make;
}

function refused(param: string, message: string, code = 'invalid_request_error'): ValidationError {
  return new ValidationError([{ code, param, message }]);
}

export async function retrieveMessageBatch(ctx: ApiContext, call: Call): Promise<void> {
  const { id, uuid } = await ownBatch(ctx, call);
  sendJson(call.res, 200, await answer(ctx, call, uuid).catch(notFound(id)));
}

export async function listMessageBatchesRoute(ctx: ApiContext, call: Call): Promise<void> {
  const q = call.query;
  const limit = intParam(q, 'limit', { min: 1, max: 1000, fallback: 20 });
  const beforeId = q.get('before_id') || null;
  const afterId = q.get('after_id') || null;
  if (beforeId && afterId) {
    throw new ApiError(400, 'Give at most one of before_id and after_id.', { code: 'invalid_cursor' });
  }
  const cursor = beforeId ?? afterId;
  const uuid = cursor ? parseMessageBatchId(cursor) : null;
  const page =
    cursor && !uuid
      ? { data: [], hasMore: false }
      : await ctx.db(
          ctx.manager.apiReads.listMessageBatches({
            owner: call.owner,
            limit,
            ...(beforeId ? { beforeId: uuid! } : afterId ? { afterId: uuid! } : {}),
          }),
        );
  const base = requestBase(call.req);
  const data = page.data.map(({ batch, status }) => messageBatchObject(batch, status, base));
  sendJson(call.res, 200, {
    data,
    has_more: page.hasMore,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
  });
}

/** Cancels: pending requests read as canceled at once; daemons abort the in-flight ones. */
export async function cancelMessageBatch(ctx: ApiContext, call: Call): Promise<void> {
  const { id, uuid } = await ownBatch(ctx, call);
  await ctx.db(ctx.manager.cancelBatch(uuid, { owner: call.owner })).catch(notFound(id));
  ctx.log({ msg: 'message batch canceled', requestId: call.requestId, owner: call.owner, batch: id });
  sendJson(call.res, 200, await answer(ctx, call, uuid));
}

export async function deleteMessageBatch(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const uuid = parseMessageBatchId(id);
  if (!uuid) throw noSuchMessageBatch(id);
  await ctx.db(ctx.manager.deleteMessageBatch(uuid, { owner: call.owner })).catch(notFound(id));
  sendJson(call.res, 200, { id, type: 'message_batch_deleted' });
}

/** GET …/results: JSONL streamed from PostgreSQL with back-pressure, once the batch has ended. */
export async function messageBatchResults(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const uuid = parseMessageBatchId(id);
  if (!uuid) throw noSuchMessageBatch(id);
  const batch = await ctx.db(ctx.manager.apiReads.messageBatch(uuid, call.owner)).catch(notFound(id));
  if (batch.finishedAt === null) {
    throw new ApiError(
      400,
      `Message batch ${id} is still processing: its results are ready once it has ended.`,
      {
        code: 'not_ended',
      },
    );
  }
  const stream = await ctx.db(ctx.manager.apiReads.messageBatchResults(uuid));
  const { res } = call;
  res.statusCode = 200;
  res.setHeader('content-type', 'application/binary');
  try {
    await pipeline(stream, res);
  } catch (err) {
    // Headers are gone: the only honest signal left is a cut connection.
    stream.destroy();
    res.destroy();
    ctx.log({
      msg: 'results download interrupted',
      requestId: call.requestId,
      error: (err as Error).message,
    });
  }
}
