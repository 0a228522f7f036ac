import { createReadStream } from 'node:fs';
import { UsageError } from '../../config/usage-error.js';
import { BatchInputParser } from '../../domain/batch-input.js';
import { ValidationError } from '../../domain/errors.js';
import { ApiClient, type BatchObject } from '../api-client.js';
import type { CommandContext } from '../main.js';
import { fromApiUpstream, routeLines } from '../route-lines.js';
import { describeFsError } from '../run/input.js';
import { exitStatusFor } from '../signals.js';
import { formatCost, usageLines } from '../usage-lines.js';
import { waitForBatch } from '../wait-batch.js';
import { printTable } from './keys.js';
import { finishMessageBatch, openAiBatchId, shownBatchId, submitMessageBatch } from './message-batches.js';

/** `submit FILE [--wait]`: checks the file locally (line-numbered errors), uploads it, creates a batch. */
export async function submitCommand(ctx: CommandContext, path: string): Promise<number> {
  const { settings, flags } = ctx;
  const format = flags.format ?? 'openai';
  if (format === 'anthropic') return submitMessageBatch(ctx, path);
  if (format !== 'openai')
    throw new UsageError(`--format must be openai or anthropic, got ${JSON.stringify(format)}`);
  const client = new ApiClient(settings.server, settings.apiKey);
  const endpoint = await checkBatchFile(path);
  const file = await client.uploadBatchFile(path);
  const batch = await client.json<BatchObject>('POST', '/batches', {
    input_file_id: file.id,
    endpoint,
    completion_window: String(flags.completionWindow ?? '24h'),
  });
  console.log(
    `submitted ${path} as batch ${batch.id} (file ${file.id}, ${batch.request_counts?.total ?? '?'} requests)`,
  );
  if (!flags.wait) {
    console.log(batch.id);
    return 0;
  }
  const finished = await waitForBatch(client, batch.id);
  if ('signal' in finished) {
    console.error(
      `fusillade: stopped waiting (${finished.signal}); the batch continues on the server: ${batch.id}`,
    );
    return exitStatusFor(finished.signal);
  }
  return finishBatch(client, finished.batch, flags);
}

export async function statusCommand({ settings }: CommandContext, batchId?: string): Promise<number> {
  const client = new ApiClient(settings.server, settings.apiKey);
  if (batchId) {
    const b = await client.json<BatchObject>('GET', `/batches/${encodeURIComponent(openAiBatchId(batchId))}`);
    const c = b.request_counts;
    console.log(
      `${shownBatchId(b)}  ${b.status}  ${c.completed + c.failed}/${c.total} done, ${c.failed} failed`,
    );
    console.log(`  endpoint ${b.endpoint}  created ${new Date(b.created_at * 1000).toISOString()}`);
    if (b.output_file_id) console.log(`  output file ${b.output_file_id}`);
    if (b.error_file_id) console.log(`  error file ${b.error_file_id}`);
    for (const line of usageLines(b)) console.log(line);
    for (const line of routeLines((b.upstreams ?? []).map(fromApiUpstream))) console.log(line);
    for (const e of b.errors?.data ?? [])
      console.log(`  error ${e.code}${e.line ? ` (line ${e.line})` : ''}: ${e.message}`);
    return 0;
  }
  const list = await client.json<{ data: BatchObject[] }>('GET', '/batches?limit=20');
  if (list.data.length === 0) {
    console.log('no batches');
    return 0;
  }
  printTable(
    ['BATCH', 'STATUS', 'DONE', 'FAILED', 'TOKENS', 'COST', 'CREATED'],
    list.data.map((b) => [
      shownBatchId(b),
      b.status,
      `${b.request_counts.completed + b.request_counts.failed}/${b.request_counts.total}`,
      String(b.request_counts.failed),
      // A live batch in a list reports no usage yet (`status BATCH` sums it).
      b.usage && b.usage.total_tokens > 0 ? b.usage.total_tokens.toLocaleString('en-US') : '-',
      b.cost != null ? formatCost(b.cost) : '-',
      new Date(b.created_at * 1000).toISOString(),
    ]),
  );
  return 0;
}

export async function resultsCommand({ settings, flags }: CommandContext, batchId: string): Promise<number> {
  const client = new ApiClient(settings.server, settings.apiKey);
  if (batchId.startsWith('msgbatch_')) return finishMessageBatch(client, batchId, flags);
  const batch = await client.json<BatchObject>('GET', `/batches/${encodeURIComponent(batchId)}`);
  return finishBatch(client, batch, flags);
}

export async function cancelCommand({ settings }: CommandContext, batchId: string): Promise<number> {
  const client = new ApiClient(settings.server, settings.apiKey);
  const b = await client.json<BatchObject>(
    'POST',
    `/batches/${encodeURIComponent(openAiBatchId(batchId))}/cancel`,
  );
  console.log(`${shownBatchId(b)}  ${b.status}`);
  return 0;
}

/** Downloads the output (and error) files when asked; exit 0 only if every request succeeded. */
async function finishBatch(
  client: ApiClient,
  batch: BatchObject,
  flags: CommandContext['flags'],
): Promise<number> {
  const c = batch.request_counts;
  const output = typeof flags.output === 'string' ? flags.output : undefined;
  const errors = typeof flags.errors === 'string' ? flags.errors : undefined;
  if (output) {
    if (batch.output_file_id) await client.downloadFile(batch.output_file_id, output);
    else console.error(`batch ${batch.id} (${batch.status}) has no output file yet`);
  }
  if (errors && batch.error_file_id) await client.downloadFile(batch.error_file_id, errors);
  console.log(
    `${batch.id} ${batch.status}: ${c.completed} succeeded, ${c.failed} failed` +
      (output && batch.output_file_id ? ` → ${output}` : '') +
      (errors && batch.error_file_id ? `, errors → ${errors}` : ''),
  );
  return batch.status === 'completed' && c.failed === 0 && c.completed === c.total ? 0 : 1;
}

/** Validates the file as the server would, so a bad line is reported before anything is uploaded. */
async function checkBatchFile(path: string): Promise<string> {
  const parser = new BatchInputParser({
    maxLines: Number.MAX_SAFE_INTEGER,
    maxBytes: Number.MAX_SAFE_INTEGER,
  });
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }))
      parser.push(chunk as Buffer);
    parser.end();
  } catch (err) {
    if (err instanceof ValidationError) throw new UsageError(`${path}: ${err.message}`);
    throw new UsageError(`cannot read ${path}: ${describeFsError(err)}`);
  }
  return parser.url!;
}
