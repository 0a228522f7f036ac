import { withoutStatementDeadline } from '../../db/statement-deadline.js';
import { isBatchEndpoint } from '../../domain/batch-input.js';
import { ValidationError } from '../../domain/errors.js';
import type { ApiContext, Call } from '../context.js';
import { ApiError, readJsonBody, sendJson } from '../http.js';
import { batchId, parseBatchId, parseFileId } from '../ids.js';
import { type BatchObject, batchObject } from '../objects.js';
import { noSuchFile } from './files.js';
import { intParam } from './params.js';

export function noSuchBatch(id: string): ApiError {
  return new ApiError(404, `No such Batch object: ${id}`, { code: 'not_found', param: 'batch_id' });
}

function isNotFound(err: unknown): boolean {
  return (err as { code?: string })?.code === 'not_found';
}

/**
 * The batch as the API shows it. `afterCommit`: the batch was just created, so the read runs
 * without the database deadline: a 503 now would make the client (which retries 503s and sends no
 * idempotency key by default) create the batch a second time.
 */
async function batchAnswer(
  ctx: ApiContext,
  call: Call,
  uuid: string,
  options: { afterCommit?: boolean } = {},
): Promise<BatchObject> {
  const scope = { owner: call.owner };
  const read = () =>
    Promise.all([
      ctx.manager.getBatch(uuid, scope),
      ctx.manager.getBatchStatus(uuid, scope),
      ctx.manager.getBatchUpstreams(uuid, scope),
    ]);
  const [batch, status, upstreams] = options.afterCommit
    ? await withoutStatementDeadline(read)
    : await ctx.db(read());
  return batchObject(batch, status, upstreams, ctx.prices);
}

function field(condition: boolean, param: string, message: string): void {
  if (!condition) throw new ApiError(400, message, { code: `invalid_${param}`, param });
}

/** OpenAI's output_expires_after: { anchor: "created_at", seconds: 3600…2592000 }, or absent. */
function outputExpiry(value: unknown): number | null {
  if (value === undefined || value === null) return null;
  const v = value as { anchor?: unknown; seconds?: unknown };
  field(
    typeof value === 'object' &&
      v.anchor === 'created_at' &&
      Number.isInteger(v.seconds) &&
      (v.seconds as number) >= 3600 &&
      (v.seconds as number) <= 2_592_000,
    'output_expires_after',
    'output_expires_after needs anchor "created_at" and seconds between 3600 and 2592000.',
  );
  return v.seconds as number;
}

/** Identical requests sent once (docs/decisions/0008): metadata `fusillade_coalesce`, "true" or "false". */
function coalesceFlag(metadata: unknown): boolean {
  const flag =
    metadata !== null && typeof metadata === 'object'
      ? (metadata as Record<string, unknown>).fusillade_coalesce
      : undefined;
  if (flag === undefined) return false;
  if (flag !== 'true' && flag !== 'false') {
    throw new ApiError(400, 'metadata.fusillade_coalesce must be "true" or "false".', {
      code: 'invalid_metadata',
      param: 'metadata',
    });
  }
  return flag === 'true';
}

export async function createBatch(ctx: ApiContext, call: Call): Promise<void> {
  const body = await readJsonBody(call.req, ctx.maxJsonBytes);
  field(
    body !== null && typeof body === 'object' && !Array.isArray(body),
    'body',
    'The body must be a JSON object.',
  );
  const {
    input_file_id: inputFileId,
    endpoint,
    completion_window: window,
    metadata,
    output_expires_after: outputExpiresAfter,
  } = body as Record<string, unknown>;
  field(typeof inputFileId === 'string' && inputFileId !== '', 'input_file_id', 'input_file_id is required.');
  field(
    isBatchEndpoint(endpoint),
    'endpoint',
    `endpoint must be one of the batch endpoints, got ${JSON.stringify(endpoint ?? null)}.`,
  );
  field(
    typeof window === 'string' && window !== '',
    'completion_window',
    'completion_window is required ("24h").',
  );
  if (ctx.completionWindows && !ctx.completionWindows.includes(window as string)) {
    throw new ApiError(
      400,
      `completion_window must be one of ${ctx.completionWindows.map((w) => JSON.stringify(w)).join(', ')}, got ${JSON.stringify(window)}.`,
      { code: 'invalid_completion_window', param: 'completion_window' },
    );
  }
  const outputExpiresAfterSeconds = outputExpiry(outputExpiresAfter);
  const coalesce = coalesceFlag(metadata);
  const fileUuid = parseFileId(inputFileId as string);
  if (!fileUuid) throw noSuchFile(inputFileId as string);
  const owner = call.owner;
  const file = await ctx.db(ctx.manager.getFile(fileUuid, { owner })).catch((err) => {
    throw isNotFound(err) ? noSuchFile(inputFileId as string) : err;
  });
  if (file.purpose !== 'batch') {
    throw new ApiError(400, `File ${inputFileId} has purpose ${file.purpose}, not batch.`, {
      code: 'invalid_input_file',
      param: 'input_file_id',
    });
  }
  const mismatch = await ctx.db(ctx.manager.apiReads.firstPathMismatch(fileUuid, endpoint as string));
  if (mismatch) {
    throw new ValidationError([
      {
        code: 'url_mismatch',
        param: 'endpoint',
        line: mismatch.line,
        message: `line ${mismatch.line} has url ${JSON.stringify(mismatch.path)}, not the batch endpoint ${JSON.stringify(endpoint)}`,
      },
    ]);
  }
  const key = call.req.headers['idempotency-key'];
  const idempotencyKey = typeof key === 'string' && key !== '' ? key.slice(0, 255) : null;
  // No deadline here: a 50,000-request insert can take seconds, and answering 503 while it may
  // still commit would invite the client to create the batch twice.
  const uuid = await ctx.manager
    .createBatch(fileUuid, {
      owner,
      endpoint: endpoint as string,
      completionWindow: window as string,
      metadata: (metadata ?? null) as Record<string, string> | null,
      idempotencyKey,
      outputExpiresAfterSeconds,
      coalesce,
      // Routed by this server's configuration as of now (the upload checked the models had routes).
      router: ctx.router,
      requireRoutes: true,
    })
    .catch((err) => {
      throw isNotFound(err) ? noSuchFile(inputFileId as string) : err;
    });
  ctx.log({ msg: 'batch created', requestId: call.requestId, owner, batch: batchId(uuid) });
  ctx.metrics.batchesCreated.inc({ api: 'openai' });
  ctx.metrics.batchRequestsCreated.inc({ api: 'openai' }, file.templateCount);
  sendJson(call.res, 200, await batchAnswer(ctx, call, uuid, { afterCommit: true }));
}

export async function retrieveBatch(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const uuid = parseBatchId(id);
  if (!uuid) throw noSuchBatch(id);
  const answer = await batchAnswer(ctx, call, uuid).catch((err) => {
    throw isNotFound(err) ? noSuchBatch(id) : err;
  });
  sendJson(call.res, 200, answer);
}

export async function cancelBatch(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const uuid = parseBatchId(id);
  if (!uuid) throw noSuchBatch(id);
  await ctx.db(ctx.manager.cancelBatch(uuid, { owner: call.owner })).catch((err) => {
    throw isNotFound(err) ? noSuchBatch(id) : err;
  });
  ctx.log({ msg: 'batch cancelled', requestId: call.requestId, owner: call.owner, batch: id });
  sendJson(call.res, 200, await batchAnswer(ctx, call, uuid));
}

export async function listBatches(ctx: ApiContext, call: Call): Promise<void> {
  const limit = intParam(call.query, 'limit', { min: 1, max: 100, fallback: 20 });
  const afterId = call.query.get('after');
  const after = afterId ? parseBatchId(afterId) : null;
  const page =
    afterId && !after
      ? { data: [], hasMore: false }
      : await ctx.db(
          ctx.manager.apiReads.listBatches({
            owner: call.owner,
            limit,
            ...(after ? { after } : {}),
          }),
        );
  const data = page.data.map(({ batch, status, upstreams }) =>
    batchObject(batch, status, upstreams, ctx.prices),
  );
  sendJson(call.res, 200, {
    object: 'list',
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: page.hasMore,
  });
}
