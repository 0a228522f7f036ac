import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { UsageError } from '../../config/usage-error.js';
import { ValidationError } from '../../domain/errors.js';
import {
  MESSAGE_BATCH_LIMITS,
  MESSAGES_PATH,
  validateMessageBatchRequest,
} from '../../domain/message-batch.js';
import { ApiClient, type BatchObject } from '../api-client.js';
import type { CommandContext } from '../main.js';
import { describeFsError } from '../run/input.js';
import { exitStatusFor } from '../signals.js';
import { waitForBatch } from '../wait-batch.js';

/**
 * `fusillade submit --format anthropic FILE.jsonl`: a file of Anthropic batch requests, one
 * `{"custom_id", "params"}` a line, checked here with line numbers, then sent to the server's
 * /v1/messages/batches as one streamed `{"requests": [...]}` body. A message batch is also an
 * ordinary batch (`batch_<hex>` for `msgbatch_<hex>`), so waiting, status and cancel use the same
 * /v1/batches calls as OpenAI batches; the results are Anthropic's JSONL.
 */

/** The parts of Anthropic's message_batch object the CLI shows. */
interface MessageBatchObject {
  id: string;
  processing_status: string;
  request_counts: {
    processing: number;
    succeeded: number;
    errored: number;
    canceled: number;
    expired: number;
  };
}

/** `msgbatch_<hex>` → `batch_<hex>` (the same batch on the OpenAI routes); other ids unchanged. */
export function openAiBatchId(id: string): string {
  return id.startsWith('msgbatch_') ? `batch_${id.slice('msgbatch_'.length)}` : id;
}

/** The id a user knows a batch by: `msgbatch_…` for a message batch, else its OpenAI id. */
export function shownBatchId(batch: Pick<BatchObject, 'id' | 'endpoint'>): string {
  return batch.endpoint === MESSAGES_PATH && batch.id.startsWith('batch_')
    ? `msgbatch_${batch.id.slice('batch_'.length)}`
    : batch.id;
}

export async function submitMessageBatch({ settings, flags }: CommandContext, path: string): Promise<number> {
  const client = new ApiClient(settings.server, settings.apiKey);
  const count = await checkMessageBatchFile(path);
  const created = await client.postStream<MessageBatchObject>('/messages/batches', requestsBody(path));
  console.log(`submitted ${path} as message batch ${created.id} (${count} requests)`);
  if (!flags.wait) {
    console.log(created.id);
    return 0;
  }
  const finished = await waitForBatch(client, openAiBatchId(created.id));
  if ('signal' in finished) {
    console.error(
      `fusillade: stopped waiting (${finished.signal}); the batch continues on the server: ${created.id}`,
    );
    return exitStatusFor(finished.signal);
  }
  return finishMessageBatch(client, created.id, flags);
}

/** Reports the ended batch's counts, writes its results with -o; exit 0 only if all succeeded. */
export async function finishMessageBatch(
  client: ApiClient,
  id: string,
  flags: CommandContext['flags'],
): Promise<number> {
  const batch = await client.json<MessageBatchObject>('GET', `/messages/batches/${encodeURIComponent(id)}`);
  const c = batch.request_counts;
  const output = typeof flags.output === 'string' ? flags.output : undefined;
  const ended = batch.processing_status === 'ended';
  if (output && ended) await client.download(`/messages/batches/${encodeURIComponent(id)}/results`, output);
  else if (output) console.error(`message batch ${id} is ${batch.processing_status}: no results yet`);
  console.log(
    `${id} ${batch.processing_status}: ${c.succeeded} succeeded, ${c.errored} errored, ${c.canceled} canceled, ${c.expired} expired` +
      (output && ended ? ` → ${output}` : ''),
  );
  const total = c.processing + c.succeeded + c.errored + c.canceled + c.expired;
  return ended && c.succeeded === total ? 0 : 1;
}

/** The file's lines, checked as the server checks them; its request count. */
async function checkMessageBatchFile(path: string): Promise<number> {
  const seen = new Set<string>();
  let count = 0;
  let bytes = 0;
  for await (const { line, text } of fileLines(path)) {
    bytes += Buffer.byteLength(text) + 1;
    if (bytes > MESSAGE_BATCH_LIMITS.maxBytes) {
      throw new UsageError(`${path}: the file is larger than ${MESSAGE_BATCH_LIMITS.maxBytes} bytes`);
    }
    if (++count > MESSAGE_BATCH_LIMITS.maxRequests) {
      throw new UsageError(
        `${path}: line ${line}: a batch holds at most ${MESSAGE_BATCH_LIMITS.maxRequests} requests`,
      );
    }
    let item: unknown;
    try {
      item = JSON.parse(text);
    } catch {
      throw new UsageError(`${path}: line ${line}: the line is not valid JSON`);
    }
    try {
      validateMessageBatchRequest(item, count - 1, seen);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      throw new UsageError(`${path}: line ${line}: ${err.message.replace(/^requests\.\d+\./, '')}`);
    }
  }
  if (count === 0) throw new UsageError(`${path}: the file contains no requests`);
  return count;
}

/** The non-blank lines of a file with their 1-based numbers; a read error is a UsageError. */
async function* fileLines(path: string): AsyncGenerator<{ line: number; text: string }> {
  let line = 0;
  try {
    const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
    for await (const raw of lines) {
      line++;
      const text = line === 1 && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
      if (text.trim() !== '') yield { line, text };
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot read ${path}: ${describeFsError(err)}`);
  }
}

/** `{"requests":[line,line,…]}` from the file's lines, as they are read. */
async function* requestsBody(path: string): AsyncGenerator<string> {
  yield '{"requests":[';
  let first = true;
  for await (const { text } of fileLines(path)) {
    yield first ? text : `,${text}`;
    first = false;
  }
  yield ']}';
}
