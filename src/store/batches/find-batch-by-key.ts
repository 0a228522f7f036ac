import type pg from 'pg';

/**
 * The batch an owner created with `idempotencyKey`, if any. `fusillade run` derives the key from
 * the input's content and upstream, so a re-run finds the batch to resume instead of storing the
 * file again (the batches_idempotency_idx unique index makes this one index probe).
 */
export async function findBatchIdByIdempotencyKey(
  pool: pg.Pool,
  schema: string,
  owner: string | null,
  idempotencyKey: string,
): Promise<string | undefined> {
  const { rows } = await pool.query<{ id: string }>(
    `SELECT id FROM ${schema}.batches
      WHERE coalesce(owner, '') = coalesce($1, '') AND idempotency_key = $2 AND deleted_at IS NULL`,
    [owner, idempotencyKey],
  );
  return rows[0]?.id;
}
