import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { type BatchInputLine, BatchInputParser } from '../domain/batch-input.js';
import { ValidationError } from '../domain/errors.js';
import type { TemplateItem } from '../store/files/files.js';
import type { ApiContext, Call } from './context.js';
import { ApiError, sendJson } from './http.js';
import { fileObject } from './objects.js';
import { preBuffer } from './pre-buffer.js';

/**
 * POST /v1/files: a multipart upload streamed from the socket through the JSONL validator into
 * COPY (manager.createFileStream), so memory stays flat for a 200 MB file. The first bad line
 * aborts the transaction and answers 400 naming the line: nothing is stored.
 */
export async function uploadFile(ctx: ApiContext, call: Call): Promise<void> {
  const { req, res } = call;
  refuseDeclaredOversize(ctx, call);
  let bb: busboy.Busboy;
  try {
    bb = busboy({
      headers: req.headers,
      limits: { files: 1, fields: 20, parts: 40, fieldSize: 64 * 1024, fileSize: ctx.maxUploadBytes + 1 },
    });
  } catch {
    throw new ApiError(400, 'Expected a multipart/form-data body with the fields "file" and "purpose".', {
      code: 'invalid_multipart',
    });
  }
  const fields = new Map<string, string>();
  bb.on('field', (name, value) => fields.set(name, value));
  const parsed = new Promise<void>((resolve, reject) => {
    bb.on('close', resolve);
    bb.on('error', reject);
  });
  parsed.catch(() => {}); // observed below
  let part: { stream: Readable; filename: string } | undefined;
  const filePart = new Promise<typeof part>((resolve) => {
    bb.on('file', (name, stream, info) => {
      // Busboy destroys its file streams with an error when the body is cut short; until the
      // reader starts, nobody else listens, and an unheard 'error' would crash the process.
      stream.on('error', () => {});
      if (name !== 'file' || part) {
        stream.resume();
        return;
      }
      part = { stream, filename: info.filename || 'input.jsonl' };
      resolve(part);
    });
    parsed.then(
      () => resolve(undefined),
      () => resolve(undefined),
    );
  });
  // A client that goes away mid-upload must not leave the COPY transaction waiting for bytes.
  const onClose = () => {
    if (!req.complete) part?.stream.destroy(new Error('the client closed the connection'));
  };
  req.on('close', onClose);
  // A client that stops sending is cut off: it must not hold a COPY transaction indefinitely.
  const armIdleTimeout = () =>
    req.setTimeout(ctx.uploadIdleTimeoutMs, () => {
      const stalled = new ApiError(408, `No upload data for ${ctx.uploadIdleTimeoutMs} ms.`, {
        code: 'upload_timeout',
        headers: { connection: 'close' },
      });
      // Mid-file, the file stream fails; before the file part or after it (a Content-Length that
      // promised more than was sent), the multipart parser does: either way the answer is this 408.
      if (part && !part.stream.readableEnded) part.stream.destroy(stalled);
      else bb.destroy(stalled);
    });
  armIdleTimeout();
  req.pipe(bb);
  try {
    const upload = await filePart;
    if (!upload) {
      await parsed.catch(malformed);
      throw new ApiError(400, 'The upload has no "file" part.', { code: 'missing_file', param: 'file' });
    }
    checkPurpose(fields, false);
    // The store parses every body (validateTemplate) before COPY: no need to parse it twice.
    const parser = new BatchInputParser(
      {
        maxLines: ctx.maxLinesPerFile,
        maxBytes: ctx.maxUploadBytes,
        maxEmbeddingInputs: ctx.maxEmbeddingInputsPerFile,
      },
      { validateBodies: false },
    );
    const toTemplate = templateMaker(ctx);
    async function* templates(): AsyncGenerator<TemplateItem> {
      try {
        for await (const chunk of upload!.stream as AsyncIterable<Buffer>) {
          for (const line of parser.push(chunk)) yield toTemplate(line);
        }
      } catch (err) {
        if (err instanceof ValidationError) throw err;
        throw malformed(err);
      }
      for (const line of parser.end()) yield toTemplate(line);
      await parsed.catch(malformed);
      // Fields may follow the file part: check them before the transaction commits.
      checkPurpose(fields, true);
      expiresAfter(fields);
    }
    // Validate up to uploadPreBufferBytes before taking a database connection: most files end within
    // it, so slow or stalled clients cannot hold connections (and an early bad line costs none).
    const stream = templates();
    const { whole, all: everything } = await preBuffer(stream, ctx.uploadPreBufferBytes);
    const owner = call.owner;
    const options = {
      owner,
      purpose: 'batch' as const,
      // Read by the store when the stream has ended: the size of the upload as received.
      get sizeBytes() {
        return parser.bytes;
      },
    };
    const store = () => ctx.manager.createFileStream(upload.filename, null, everything(), options);
    // A file larger than the pre-buffer holds a connection while its client sends the rest: at most
    // uploadSlots such uploads at once, so they cannot take every connection of the pool. Waiting
    // for a slot is not the client's stall: the idle timeout restarts with the slot.
    const waitForSlot = () => {
      req.setTimeout(0);
      return ctx.uploadSlots.run(() => {
        armIdleTimeout();
        return store();
      });
    };
    const id = await (whole ? store() : waitForSlot()).finally(() => stream.return(undefined));
    await ctx.db(ctx.manager.setFileExpiry(id, expiresAfter(fields)));
    const file = await ctx.db(ctx.manager.getFile(id, { owner }));
    ctx.metrics.uploadedLines.inc(parser.lines);
    ctx.metrics.uploadedBytes.inc(parser.bytes);
    ctx.log({
      msg: 'file uploaded',
      requestId: call.requestId,
      owner,
      lines: parser.lines,
      bytes: parser.bytes,
    });
    sendJson(res, 200, fileObject(file, file.sizeBytes));
  } catch (err) {
    // Discard the rest of the body so the error answer reaches the client.
    req.unpipe(bb);
    req.resume();
    throw err;
  } finally {
    req.off('close', onClose);
    req.setTimeout(0);
  }
}

/**
 * The multipart framing around the file: boundaries, part headers, the purpose and expires_after
 * fields. A body that declares more than the file limit plus this cannot hold an acceptable file.
 */
export const MULTIPART_ALLOWANCE_BYTES = 64 * 1024;

/**
 * An upload whose Content-Length already says it is too large is refused before a byte of its body
 * is read (a 300 MB body over a 200 MB limit would otherwise be streamed and validated up to the
 * limit first). The answer closes the connection: the unread body cannot be skipped any other way.
 * Uploads without a Content-Length (chunked) are checked as they stream (BatchInputParser).
 */
function refuseDeclaredOversize(ctx: ApiContext, call: Call): void {
  const header = call.req.headers['content-length'];
  if (header === undefined) return;
  const declared = Number(header);
  if (!Number.isFinite(declared) || declared <= ctx.maxUploadBytes + MULTIPART_ALLOWANCE_BYTES) return;
  throw new ApiError(
    413,
    `The upload declares ${declared} bytes; files are limited to ${ctx.maxUploadBytes} bytes.`,
    { code: 'file_too_large', param: 'file', headers: { connection: 'close' } },
  );
}

function malformed(err: unknown): never {
  if (err instanceof ApiError) throw err;
  throw new ApiError(400, `The multipart body is malformed: ${(err as Error)?.message ?? err}`, {
    code: 'invalid_multipart',
  });
}

function checkPurpose(fields: Map<string, string>, final: boolean): void {
  const purpose = fields.get('purpose');
  if (purpose === undefined && !final) return;
  if (purpose !== 'batch') {
    throw new ApiError(
      400,
      purpose === undefined
        ? 'The field "purpose" is required ("batch").'
        : `Unsupported purpose ${JSON.stringify(purpose)}: this server accepts "batch".`,
      { code: 'invalid_purpose', param: 'purpose' },
    );
  }
}

/** An uploaded batch file lives 30 days unless expires_after says otherwise (as at OpenAI). */
export const DEFAULT_FILE_EXPIRY_SECONDS = 2_592_000;

/**
 * The seconds from the file's created_at to its expiry: OpenAI's optional
 * expires_after[anchor]=created_at and expires_after[seconds] (1 hour to 30 days), else 30 days.
 */
function expiresAfter(fields: Map<string, string>): number {
  const anchor = fields.get('expires_after[anchor]');
  const secs = fields.get('expires_after[seconds]');
  if (anchor === undefined && secs === undefined) return DEFAULT_FILE_EXPIRY_SECONDS;
  const n = Number(secs);
  if (anchor !== 'created_at' || !Number.isInteger(n) || n < 3600 || n > 2_592_000) {
    throw new ApiError(400, 'expires_after needs anchor "created_at" and seconds between 3600 and 2592000.', {
      code: 'invalid_expires_after',
      param: 'expires_after',
    });
  }
  return n;
}

/** A line becomes a template routed by its model; the upstream key is resolved at dispatch. */
function templateMaker(ctx: ApiContext): (line: BatchInputLine) => TemplateItem {
  const endpoints = new Map<string, string | undefined>();
  return (line) => {
    if (!endpoints.has(line.model)) endpoints.set(line.model, ctx.router.route(line.model)?.endpoint);
    const endpoint = endpoints.get(line.model);
    if (!endpoint) {
      throw new ValidationError([
        {
          code: 'unknown_model',
          param: 'body.model',
          line: line.line,
          message: `no upstream is configured for model ${JSON.stringify(line.model)}`,
        },
      ]);
    }
    return {
      endpoint,
      method: 'POST',
      path: line.url,
      body: line.body,
      model: line.model,
      apiKey: '',
      customId: line.customId,
      lineNumber: line.line,
    };
  };
}
