import { pipeline } from 'node:stream/promises';
import type { FileInfo, FilePurpose } from '../../domain/types.js';
import type { ApiContext, Call } from '../context.js';
import { ApiError, sendJson } from '../http.js';
import { fileId, parseFileId } from '../ids.js';
import { type FileObject, fileObject } from '../objects.js';
import { intParam } from './params.js';

const PURPOSES: readonly FilePurpose[] = ['batch', 'batch_output', 'batch_error'];

export function noSuchFile(id: string): ApiError {
  return new ApiError(404, `No such File object: ${id}`, { code: 'not_found', param: 'file_id' });
}

/**
 * Resolves an OpenAI file id to the owner's file, or 404. `measured`: with the real size of an
 * output or error file (one pass over its batch's rows), which reading its content does not need.
 */
async function ownFile(ctx: ApiContext, call: Call, id: string, measured = true): Promise<FileInfo> {
  const uuid = parseFileId(id);
  if (!uuid) throw noSuchFile(id);
  try {
    return await ctx.db(
      measured
        ? ctx.manager.getFile(uuid, { owner: call.owner })
        : ctx.manager.apiReads.storedFile(uuid, call.owner),
    );
  } catch (err) {
    if ((err as { code?: string }).code === 'not_found') throw noSuchFile(id);
    throw err;
  }
}

export async function listFiles(ctx: ApiContext, call: Call): Promise<void> {
  const q = call.query;
  const purpose = q.get('purpose') ?? undefined;
  if (purpose !== undefined && !PURPOSES.includes(purpose as FilePurpose)) {
    // Purposes this server never stores (fine-tune, assistants, ...) have no files.
    sendJson(call.res, 200, { object: 'list', data: [], first_id: null, last_id: null, has_more: false });
    return;
  }
  const order = q.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') {
    throw new ApiError(400, 'order must be "asc" or "desc".', { code: 'invalid_order', param: 'order' });
  }
  const limit = intParam(q, 'limit', { min: 1, max: 10_000, fallback: 10_000 });
  const afterId = q.get('after');
  const after = afterId ? parseFileId(afterId) : null;
  if (afterId && !after) {
    sendJson(call.res, 200, { object: 'list', data: [], first_id: null, last_id: null, has_more: false });
    return;
  }
  const page = await ctx.db(
    ctx.manager.listFiles({
      owner: call.owner,
      limit,
      order,
      ...(purpose ? { purpose: purpose as FilePurpose } : {}),
      ...(after ? { after } : {}),
    }),
  );
  // Output and error files come measured from their batch (the store's getFile and listFiles).
  const data: FileObject[] = page.data.map((f) => fileObject(f, f.sizeBytes));
  sendJson(call.res, 200, {
    object: 'list',
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: page.hasMore,
  });
}

export async function retrieveFile(ctx: ApiContext, call: Call): Promise<void> {
  const file = await ownFile(ctx, call, call.params[0]!);
  sendJson(call.res, 200, fileObject(file, file.sizeBytes));
}

export async function deleteFile(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const file = await ownFile(ctx, call, id, false);
  await ctx.db(ctx.manager.deleteFile(file.id, { owner: call.owner }));
  sendJson(call.res, 200, { id: fileId(file.id), object: 'file', deleted: true });
}

/** The raw JSONL, streamed from PostgreSQL with back-pressure (never buffered whole). */
export async function fileContent(ctx: ApiContext, call: Call): Promise<void> {
  const file = await ownFile(ctx, call, call.params[0]!, false);
  const stream = await ctx.db(ctx.manager.apiReads.fileContent(file));
  const { res } = call;
  res.statusCode = 200;
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-disposition', `attachment; filename="${file.name.replace(/["\\\r\n]/g, '_')}"`);
  try {
    await pipeline(stream, res);
  } catch (err) {
    // Headers are gone: the only honest signal left is a cut connection.
    stream.destroy();
    res.destroy();
    ctx.log({ msg: 'file download interrupted', requestId: call.requestId, error: (err as Error).message });
  }
}
