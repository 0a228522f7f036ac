/**
 * The purge's statements (src/db/purge.ts runs them; docs/decisions/retention.md says why).
 *
 * What goes, and when:
 *   - a file whose expires_at has passed is marked deleted (it reads as gone at once);
 *   - with a retention cutoff ($1): a batch finished before it is marked deleted, and so is an input
 *     file created before it that no remaining batch uses;
 *   - a deleted batch that has nothing in flight goes with its requests, retry history, models,
 *     routes, settled webhook deliveries and output and error files;
 *   - a finished batch whose output and error files are all deleted (expired by its
 *     output_expires_after, or deleted through the API) loses its requests; the batch row stays
 *     with its frozen counts;
 *   - a deleted input file that no batch uses any more goes with its templates.
 * Rows go in chunks of at most $2 per transaction (≈10k): one large DELETE of 500k requests took
 * 9.6 s and 979 MB of WAL and held back the pending index's cleanup for the whole time.
 * Chunks are picked by ctid through the (batch_id, …) and (file_id, …) indexes, so a chunk reads
 * only the rows it deletes.
 */

/** $1 is the retention in ms (NULL: none): rows older than now() minus it are past the cutoff. */
const CUTOFF = `(now() - $1::float8 * interval '1 millisecond')`;

/** Only one purger works at a time: every purge transaction takes this transaction-level lock first. */
export function purgeLockKey(schema: string): string {
  return `fusillade.purge:${schema}`;
}

/** Marks the files whose expires_at has passed deleted (output files expire by output_expires_after). */
export function markExpiredFilesSql(s: string): string {
  return `UPDATE ${s}.files SET deleted_at = now() WHERE deleted_at IS NULL AND expires_at <= now()`;
}

/** $1 retention. Marks the batches that finished before the cutoff deleted, and their output files. */
export function retireBatchesSql(s: string): string {
  return `
WITH retired AS (
  UPDATE ${s}.batches SET deleted_at = now()
   WHERE deleted_at IS NULL AND finished_at <= ${CUTOFF}
  RETURNING id
)
UPDATE ${s}.files f SET deleted_at = now()
  FROM retired r WHERE f.source_batch_id = r.id AND f.deleted_at IS NULL`;
}

/** $1 retention. Marks input files created before the cutoff that no remaining batch uses deleted. */
export function retireInputFilesSql(s: string): string {
  return `
UPDATE ${s}.files f SET deleted_at = now()
 WHERE f.deleted_at IS NULL AND f.purpose = 'batch' AND f.created_at <= ${CUTOFF}
   AND NOT EXISTS (SELECT 1 FROM ${s}.batches b WHERE b.file_id = f.id AND b.deleted_at IS NULL)`;
}

/** A deleted batch that can go: ended, or with nothing in flight (a deleted batch is never claimed). */
function goneBatch(s: string, b: string): string {
  return `${b}.deleted_at IS NOT NULL
   AND (${b}.finished_at IS NOT NULL OR NOT EXISTS (
         SELECT 1 FROM ${s}.requests r WHERE r.batch_id = ${b}.id AND r.state IN ('claimed', 'processing')))`;
}

/** $1 how many. Deleted batches to remove, oldest deletion first. */
export function goneBatchesSql(s: string): string {
  return `SELECT b.id FROM ${s}.batches b WHERE ${goneBatch(s, 'b')} ORDER BY b.deleted_at LIMIT $1`;
}

/**
 * Finished batches still listed whose output and error files are all deleted, and which still have
 * requests: their results are no longer reachable.
 */
function outputGone(s: string, b: string): string {
  return `${b}.deleted_at IS NULL AND ${b}.finished_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM ${s}.files f WHERE f.source_batch_id = ${b}.id AND f.deleted_at IS NOT NULL)
   AND NOT EXISTS (SELECT 1 FROM ${s}.files f WHERE f.source_batch_id = ${b}.id AND f.deleted_at IS NULL)`;
}

/** $1 how many. Batches whose output files are gone, found from the deleted output files. */
export function outputGoneBatchesSql(s: string): string {
  return `
SELECT b.id FROM ${s}.batches b
 WHERE b.id IN (SELECT f.source_batch_id FROM ${s}.files f
                 WHERE f.deleted_at IS NOT NULL AND f.source_batch_id IS NOT NULL)
   AND ${outputGone(s, 'b')}
 LIMIT $1`;
}

/** A deleted input file no batch uses any more. */
function goneInputFile(s: string, f: string): string {
  return `${f}.deleted_at IS NOT NULL AND ${f}.purpose = 'batch'
   AND NOT EXISTS (SELECT 1 FROM ${s}.batches b WHERE b.file_id = ${f}.id)`;
}

/** $1 how many. Deleted input files to remove with their templates. */
export function goneInputFilesSql(s: string): string {
  return `SELECT f.id FROM ${s}.files f WHERE ${goneInputFile(s, 'f')} ORDER BY f.deleted_at LIMIT $1`;
}

/** $1 key, $2 chunk size. Deletes one chunk of `table`'s rows whose `column` is $1; returns the count. */
export function deleteChunkSql(
  s: string,
  table: 'requests' | 'request_failures' | 'request_templates',
): string {
  const column = table === 'request_templates' ? 'file_id' : 'batch_id';
  return `
WITH gone AS (
  DELETE FROM ${s}.${table}
   WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${s}.${table} WHERE ${column} = $1 LIMIT $2))
  RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;
}

/**
 * $1 batch. The rest of a deleted batch once its requests and retry history are gone: one
 * statement, returning how many output and error files went (NULL row: the batch was not there).
 * Pending webhook deliveries stay (their deliverer still sends them; they refer to the batch by id).
 */
export function deleteBatchSql(s: string): string {
  return `
WITH models AS (DELETE FROM ${s}.batch_models WHERE batch_id = $1),
     routes AS (DELETE FROM ${s}.batch_routes WHERE batch_id = $1),
     hooks AS (DELETE FROM ${s}.webhook_deliveries WHERE batch_id = $1 AND state <> 'pending'),
     outputs AS (DELETE FROM ${s}.files WHERE source_batch_id = $1 RETURNING 1),
     batch AS (DELETE FROM ${s}.batches WHERE id = $1 RETURNING 1)
SELECT (SELECT count(*) FROM batch)::int AS batches, (SELECT count(*) FROM outputs)::int AS outputs`;
}

/** $1 batch. The deleted output and error files of a batch whose requests are gone. */
export function deleteOutputFilesSql(s: string): string {
  return `
WITH outputs AS (DELETE FROM ${s}.files WHERE source_batch_id = $1 AND deleted_at IS NOT NULL RETURNING 1)
SELECT count(*)::int AS outputs FROM outputs`;
}

/** $1 file. A deleted input file whose templates are gone (checked again: no batch uses it). */
export function deleteInputFileSql(s: string): string {
  return `
WITH f AS (DELETE FROM ${s}.files f WHERE f.id = $1 AND ${goneInputFile(s, 'f')} RETURNING 1)
SELECT count(*)::int AS files FROM f`;
}

/**
 * $1 retention. What a purge would remove now, without removing it (`fusillade purge --dry-run`):
 * the same conditions, with the marking steps taken as done.
 */
export function purgePreviewSql(s: string): string {
  const retiredBatch = (b: string) =>
    `(${goneBatch(s, b)} OR (${b}.deleted_at IS NULL AND ${b}.finished_at <= ${CUTOFF}))`;
  const expiredFile = (f: string) =>
    `(${f}.deleted_at IS NOT NULL OR ${f}.expires_at <= now()
      OR (${f}.purpose = 'batch' AND ${f}.created_at <= ${CUTOFF}))`;
  return `
WITH doomed AS (SELECT b.id FROM ${s}.batches b WHERE ${retiredBatch('b')}),
     emptied AS (
       SELECT b.id FROM ${s}.batches b
        WHERE b.deleted_at IS NULL AND b.finished_at IS NOT NULL AND (b.finished_at <= ${CUTOFF}) IS NOT TRUE
          AND EXISTS (SELECT 1 FROM ${s}.files f WHERE f.source_batch_id = b.id AND ${expiredFile('f')})
          AND NOT EXISTS (SELECT 1 FROM ${s}.files f WHERE f.source_batch_id = b.id AND NOT ${expiredFile('f')})),
     inputs AS (
       SELECT f.id, f.template_count FROM ${s}.files f
        WHERE f.purpose = 'batch' AND ${expiredFile('f')}
          AND NOT EXISTS (SELECT 1 FROM ${s}.batches b
                           WHERE b.file_id = f.id AND b.id NOT IN (SELECT id FROM doomed)))
SELECT (SELECT count(*) FROM doomed)::int AS batches,
       (SELECT count(*) FROM ${s}.requests r
         WHERE r.batch_id IN (SELECT id FROM doomed UNION ALL SELECT id FROM emptied))::int AS requests,
       (SELECT count(*) FROM ${s}.files f
         WHERE f.source_batch_id IN (SELECT id FROM doomed UNION ALL SELECT id FROM emptied))::int AS output_files,
       (SELECT count(*) FROM inputs)::int AS input_files,
       (SELECT coalesce(sum(template_count), 0) FROM inputs)::int AS templates`;
}
