/**
 * $1 batch, $2 the finished_at its answers were compressed for. Kept only if the batch is still
 * ended at that instant (a retry that reopened it meanwhile brings it back to the pass later).
 */
export function markBatchCompressedSql(s: string): string {
  return `UPDATE ${s}.batches SET compressed_for = $2::timestamptz WHERE id = $1 AND finished_at = $2::timestamptz`;
}
