/**
 * $1 delay in ms, $2 how many. Ended batches whose answers are not compressed for their current
 * end yet (batches.compressed_for, migration 0022), ended at least $1 ms ago, oldest end first. A
 * batch a retry reopened and that ended again comes back (its finished_at moved on). finished_at as
 * text: a JS Date would drop its microseconds, and markBatchCompressedSql compares it exactly. Deleted
 * batches are left to the purge. The batches table is small next to requests: no index needed.
 */
export function compressibleBatchesSql(s: string): string {
  return `SELECT b.id, b.finished_at::text AS finished_at FROM ${s}.batches b
   WHERE b.finished_at IS NOT NULL AND b.deleted_at IS NULL
     AND b.finished_at <= now() - $1::float8 * interval '1 millisecond'
     AND b.compressed_for IS DISTINCT FROM b.finished_at
   ORDER BY b.finished_at LIMIT $2`;
}
