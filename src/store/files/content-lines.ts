import type { Readable } from 'node:stream';
import { ValidationError } from '../../domain/errors.js';
import type { FileInfo } from '../../domain/types.js';
import { openFileContent } from './output-files.js';

/**
 * A file's or a batch's results as an async iterable of JSONL lines, streamed from PostgreSQL by
 * the same COPY path the API's downloads use (output-files.ts): nothing is buffered whole, and the
 * COPY pauses while the caller does not read, so memory holds one chunk (~256 KB) and one line
 * whatever the row count (bench/batch-results.ts: 1,000,000 rows, RSS growth 38 MB on a loaded
 * machine). Leaving the loop early (break, throw) ends the COPY and discards its connection.
 * Splitting into lines costs little next to the statement: a CPU profile of that bench's reader had
 * Node idle 62% of the time, waiting for PostgreSQL. A hand-written iterator handing out a chunk's
 * lines without a generator measured within noise of this generator (1,000,000 lines in memory).
 */

const NEWLINE = 0x0a;

/** The lines of a JSONL byte stream, without their newline, as the caller pulls them. */
export async function* jsonlLines(stream: Readable): AsyncGenerator<string, void, undefined> {
  // A line cut by a chunk end waits in `carry`, copied out once when its newline arrives.
  let carry: Buffer[] = [];
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0;
      for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
        let line: string;
        if (carry.length > 0) {
          carry.push(chunk.subarray(start, nl));
          line = Buffer.concat(carry).toString('utf8');
          carry = [];
        } else {
          line = chunk.toString('utf8', start, nl);
        }
        start = nl + 1;
        yield line;
      }
      if (start < chunk.length) carry.push(chunk.subarray(start));
    }
    if (carry.length > 0) yield Buffer.concat(carry).toString('utf8');
  } finally {
    stream.destroy();
  }
}

/** Which of a batch's results getBatchResults streams. */
export type ResultsInclude = 'completed' | 'failed' | 'all';

const INCLUDE: readonly ResultsInclude[] = ['completed', 'failed', 'all'];

export function checkInclude(include: unknown): ResultsInclude {
  if (INCLUDE.includes(include as ResultsInclude)) return include as ResultsInclude;
  throw new ValidationError([
    {
      code: 'invalid_include',
      param: 'include',
      message: `include must be one of ${INCLUDE.join(', ')}, got ${JSON.stringify(include)}`,
    },
  ]);
}

/** A file's lines (input files rebuilt from their templates; output and error files from the batch). */
export async function* fileLines(
  pool: import('pg').Pool,
  schema: string,
  file: () => Promise<FileInfo>,
): AsyncGenerator<string, void, undefined> {
  yield* jsonlLines(await openFileContent(pool, schema, await file()));
}

/**
 * A batch's result lines as its output file (completed requests) and error file (failed, canceled
 * and expired ones) hold them, as they are now: a live batch gives the results so far. `all` is the
 * output lines, then the error lines. `batch` resolves once the batch is known to exist (and to be
 * the caller's); it is called at the first read (a promise made before could reject unobserved).
 */
export async function* batchResultLines(
  pool: import('pg').Pool,
  schema: string,
  batch: () => Promise<{ id: string }>,
  include: ResultsInclude,
): AsyncGenerator<string, void, undefined> {
  const { id } = await batch();
  if (include !== 'failed') {
    yield* jsonlLines(
      await openFileContent(pool, schema, { id, purpose: 'batch_output', sourceBatchId: id }),
    );
  }
  if (include !== 'completed') {
    yield* jsonlLines(await openFileContent(pool, schema, { id, purpose: 'batch_error', sourceBatchId: id }));
  }
}
