import type { IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { messageBatchResultsSql } from '../../db/sql/message-batch-results.js';
import { NotFoundError, ValidationError } from '../../domain/errors.js';
import { MESSAGE_BATCH_WINDOW, MESSAGES_PATH, validateMessageBatchBody } from '../../domain/message-batch.js';
import type { TemplateItem } from '../../store/files.js';
import { deleteEndedMessageBatch, getMessageBatch, listMessageBatches } from '../../store/message-batches.js';
import { openCopyLines } from '../../store/output-files.js';
import { type MessageBatchObject, messageBatchObject } from '../anthropic-objects.js';
import type { ApiContext, Call } from '../context.js';
import { ApiError, readJsonBody, sendJson } from '../http.js';
import { messageBatchId, parseMessageBatchId } from '../ids.js';
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
  await ctx.db(getMessageBatch(ctx.manager.pool, ctx.manager.schema, uuid, call.owner)).catch(notFound(id));
  return { id, uuid };
}

function notFound(id: string): (err: unknown) => never {
  return (err) => {
    throw err instanceof NotFoundError ? noSuchMessageBatch(id) : err;
  };
}

async function answer(ctx: ApiContext, call: Call, uuid: string): Promise<MessageBatchObject> {
  const scope = { owner: call.owner };
  const [batch, status] = await ctx.db(
    Promise.all([ctx.manager.getBatch(uuid, scope), ctx.manager.getBatchStatus(uuid, scope)]),
  );
  return messageBatchObject(batch, status, requestBase(call.req));
}

/**
 * POST /v1/messages/batches: the requests become an input file (its templates routed by model, as
 * an upload's lines) and a batch of endpoint /v1/messages with a 24 h window, in two steps; the file
 * is removed again when the batch cannot be made.
 */
export async function createMessageBatch(ctx: ApiContext, call: Call): Promise<void> {
  const body = await readJsonBody(call.req, ctx.maxMessageBatchBytes);
  const requests = validateMessageBatchBody(body, ctx.maxMessageBatchRequests);
  const templates: TemplateItem[] = requests.map((r, i) => {
    const endpoint = ctx.router.route(r.model)?.endpoint;
    if (!endpoint) {
      throw new ValidationError([
        {
          code: 'unknown_model',
          param: `requests.${i}.params.model`,
          message: `requests.${i}.params.model: no upstream is configured for model ${JSON.stringify(r.model)}`,
        },
      ]);
    }
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
  });
  const owner = call.owner;
  const { manager } = ctx;
  const fileUuid = await manager.createFileStream('message_batch_requests.jsonl', null, templates, {
    owner,
    purpose: 'batch',
  });
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
  ctx.metrics.batchRequestsCreated.inc({ api: 'anthropic' }, templates.length);
  sendJson(call.res, 200, await answer(ctx, call, uuid));
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
          listMessageBatches(ctx.manager.pool, ctx.manager.schema, {
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
  await ctx
    .db(deleteEndedMessageBatch(ctx.manager.pool, ctx.manager.schema, uuid, call.owner))
    .catch(notFound(id));
  sendJson(call.res, 200, { id, type: 'message_batch_deleted' });
}

/** GET …/results: JSONL streamed from PostgreSQL with back-pressure, once the batch has ended. */
export async function messageBatchResults(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const uuid = parseMessageBatchId(id);
  if (!uuid) throw noSuchMessageBatch(id);
  const { pool, schema } = ctx.manager;
  const batch = await ctx.db(getMessageBatch(pool, schema, uuid, call.owner)).catch(notFound(id));
  if (batch.finishedAt === null) {
    throw new ApiError(
      400,
      `Message batch ${id} is still processing: its results are ready once it has ended.`,
      {
        code: 'not_ended',
      },
    );
  }
  const stream = await ctx.db(openCopyLines(pool, messageBatchResultsSql(schema, uuid)));
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
