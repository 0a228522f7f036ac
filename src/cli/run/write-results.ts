import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { PostgresRequestManager } from '../../manager/request-manager.js';

/**
 * Writes a batch's output or error file (OpenAI's JSONL line formats), streamed from the requests
 * table by the same code the server uses for its file downloads. Written to a temporary name and
 * renamed, so a reader never sees half a file.
 */
export async function writeBatchFile(
  manager: PostgresRequestManager,
  batchId: string,
  purpose: 'batch_output' | 'batch_error',
  path: string,
): Promise<void> {
  const file = { id: batchId, purpose, sourceBatchId: batchId };
  const tmp = `${path}.partial-${process.pid}`;
  try {
    await pipeline(await manager.apiReads.fileContent(file), createWriteStream(tmp));
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
