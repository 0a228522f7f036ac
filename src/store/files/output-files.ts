import type { Readable, Transform } from 'node:stream';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import {
  errorLinesSql,
  inputLinesSql,
  type LinesMode,
  literal,
  outputLinesSql,
  outputRowsSql,
} from '../../db/sql/results/output-lines.js';
import type { FileInfo } from '../../domain/types.js';
import { InflateZippedBodies } from '../compression-splice.js';
import { CopyTextToJsonl, OutputRowsToJsonl } from './copy-text-decode.js';

/**
 * File content as a stream of JSONL bytes, straight from PostgreSQL: output and error files from
 * the batch's requests, input files from their templates. Memory stays flat however large the
 * file: COPY TO hands over rows as they come and pauses when the reader does.
 */

/** What locating a file's content needs: for output and error files, the batch they come from. */
export type ContentSource = Pick<FileInfo, 'id' | 'purpose' | 'sourceBatchId'>;

function linesSql(schema: string, file: ContentSource, mode: LinesMode = 'lines'): string {
  if (file.purpose === 'batch') return inputLinesSql(schema, file.id);
  if (!file.sourceBatchId) throw new TypeError(`file ${file.id} has no source batch`);
  return file.purpose === 'batch_output'
    ? outputLinesSql(schema, file.sourceBatchId, mode)
    : errorLinesSql(schema, file.sourceBatchId, mode);
}

/** Text format: its escapes are undone (and raw newlines blanked) by CopyTextToJsonl. */
function copyOut(sql: string): string {
  return `COPY (${sql}) TO STDOUT`;
}

/**
 * Opens the file's content. The stream holds one pooled connection until it ends; destroying it
 * (a client that went away) discards that connection rather than return it mid-COPY.
 */
export async function openFileContent(pool: pg.Pool, schema: string, file: ContentSource): Promise<Readable> {
  // Output files, the large and hot case, come as columns framed in Node (see outputRowsSql).
  const framed = file.purpose === 'batch_output' && file.sourceBatchId !== null;
  const sql = framed ? outputRowsSql(schema, file.sourceBatchId!) : linesSql(schema, file);
  return openCopyLines(pool, sql, framed ? new OutputRowsToJsonl() : new CopyTextToJsonl());
}

/**
 * Streams the rows of `sql` (one text column of JSON lines, or the columns `decode` frames) as
 * JSONL through COPY TO, with back-pressure. The stream holds one pooled connection until it ends;
 * destroying it (a client that went away) discards that connection rather than return it mid-COPY.
 * Compressed bodies in the lines (marked hex, migration 0022) are inflated last, by
 * InflateZippedBodies: a chunk without one passes through after one indexOf.
 */
export async function openCopyLines(
  pool: pg.Pool,
  sql: string,
  decode: Transform = new CopyTextToJsonl(),
): Promise<Readable> {
  const client = await pool.connect();
  let released = false;
  const release = (err?: Error | boolean) => {
    if (released) return;
    released = true;
    client.release(err);
  };
  let stream: ReturnType<typeof copyTo>;
  try {
    stream = client.query(copyTo(copyOut(sql)));
  } catch (err) {
    release(true);
    throw err;
  }
  stream.on('end', () => release());
  stream.on('error', (err) => release(err));
  stream.on('close', () => release(!stream.readableEnded));
  stream.on('error', (err) => decode.destroy(err));
  // A reader that stops early (client gone) ends the COPY too, discarding its connection.
  decode.on('close', () => {
    if (!stream.readableEnded) stream.destroy();
  });
  const inflate = new InflateZippedBodies();
  decode.on('error', (err) => inflate.destroy(err));
  inflate.on('close', () => {
    if (!decode.destroyed) decode.destroy();
  });
  return stream.pipe(decode).pipe(inflate);
}

/** What a file's content measures: its bytes and its lines. */
export interface ContentSize {
  bytes: number;
  lines: number;
}

/**
 * Bytes and lines of output and error files, measured from their batch's requests as they are now
 * (so they match the batch at every moment, also while a retry reopened it), without reading the
 * bodies of JSON answers (octet_length of a stored text is known without decompressing it; see
 * sql/output-lines.ts). Several files (a list page) in one statement each 100: one round trip
 * instead of one per file. Input files are not measured here (their upload's size is stored).
 *
 * A file of an ended batch is measured once: its size is stored with the batch's finished_at
 * (files.measured_for, migration 0018) and read back while the batch stays ended at that instant,
 * so a page of ended batches' files reads a few rows instead of every request of its batches.
 */
export async function measureFiles(
  pool: pg.Pool,
  schema: string,
  files: FileInfo[],
): Promise<Map<string, ContentSize>> {
  const sizes = new Map<string, ContentSize>();
  const measured = files.filter((f) => f.purpose !== 'batch' && f.sourceBatchId);
  if (measured.length === 0) return sizes;
  const stored = await pool.query<{ id: string; bytes: string; lines: number }>(
    `SELECT f.id, f.size_bytes AS bytes, f.template_count AS lines
       FROM ${schema}.files f JOIN ${schema}.batches b ON b.id = f.source_batch_id
      WHERE f.id = ANY($1::uuid[]) AND f.measured_for = b.finished_at`,
    [measured.map((f) => f.id)],
  );
  for (const r of stored.rows) sizes.set(r.id, { bytes: Number(r.bytes), lines: r.lines });
  const rest = measured.filter((f) => !sizes.has(f.id));
  const ended: { id: string; bytes: string; lines: string; finishedAt: string }[] = [];
  // 100 files a statement keeps the SQL text small for a 10,000-file page.
  for (let from = 0; from < rest.length; from += 100) {
    const group = rest.slice(from, from + 100);
    // The batch's finished_at is read by the same statement (the same snapshot) as the size.
    const result = await pool.query<{ id: string; bytes: string; lines: string; finished_at: string | null }>(
      group
        .map(
          (f, i) =>
            `SELECT $${i + 1}::uuid AS id, q.*,
                    (SELECT b.finished_at::text FROM ${schema}.batches b WHERE b.id = ${literal(f.sourceBatchId!)}) AS finished_at
               FROM (SELECT coalesce(sum(l.n), 0) AS bytes, count(*) AS lines
                FROM (${linesSql(schema, f, 'size')}) l) q`,
        )
        .join(' UNION ALL '),
      group.map((f) => f.id),
    );
    for (const r of result.rows) {
      sizes.set(r.id, { bytes: Number(r.bytes), lines: Number(r.lines) });
      if (r.finished_at !== null)
        ended.push({ id: r.id, bytes: r.bytes, lines: r.lines, finishedAt: r.finished_at });
    }
  }
  if (ended.length > 0) {
    // Kept only if the batch is still ended at the instant measured (not reopened meanwhile).
    await pool.query(
      `UPDATE ${schema}.files f SET size_bytes = u.bytes, template_count = u.lines, measured_for = u.finished_at
         FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::timestamptz[]) AS u(id, bytes, lines, finished_at),
              ${schema}.batches b
        WHERE f.id = u.id AND b.id = f.source_batch_id AND b.finished_at = u.finished_at`,
      [
        ended.map((e) => e.id),
        ended.map((e) => e.bytes),
        ended.map((e) => e.lines),
        ended.map((e) => e.finishedAt),
      ],
    );
  }
  return sizes;
}
