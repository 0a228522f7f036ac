import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  batchLifecycleStatus,
  batchStatusSql,
  isLive,
  LIVE_INDEX_PREDICATE,
  liveBatchSql,
} from '../../src/domain/batch-lifecycle.js';
import { createTestDb, type TestDb } from '../support/db.js';

/**
 * The SQL the store runs (status for list filters, the live condition of the claim, the dashboard
 * and the daemon's watches) is generated from the same rules as the TypeScript the library returns;
 * these tests hold them equal on random rows, at a fixed `now`, including the boundary (a deadline
 * equal to now has passed).
 */

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb({ max: 2 });
});
afterAll(() => db.close());

const NOW = new Date('2026-06-01T00:00:00.000Z');
/** null, or a time near now (seconds apart, now itself included). */
const stamp = fc.option(
  fc.integer({ min: -3, max: 3 }).map((k) => new Date(NOW.getTime() + k * 1000)),
  { nil: null, freq: 2 },
);
const row = fc.record({
  finalizingAt: stamp,
  completedAt: stamp,
  expiredAt: stamp,
  cancellingAt: stamp,
  cancelledAt: stamp,
  finishedAt: stamp,
  deletedAt: stamp,
  expiresAt: stamp,
});

describe('the batch status and live condition, SQL against TypeScript', () => {
  it('agree on random rows', async () => {
    const sql = `
SELECT ${batchStatusSql('b', '$2::timestamptz')} AS status, ${liveBatchSql('b', '$2::timestamptz')} AS live
  FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(j, i),
       LATERAL jsonb_to_record(e.j) AS b(finalizing_at timestamptz, completed_at timestamptz,
         expired_at timestamptz, cancelling_at timestamptz, cancelled_at timestamptz, finished_at timestamptz,
         deleted_at timestamptz, expires_at timestamptz)
 ORDER BY e.i`;
    await fc.assert(
      fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 200 }), async (rows) => {
        const json = rows.map((r) => ({
          finalizing_at: r.finalizingAt,
          completed_at: r.completedAt,
          expired_at: r.expiredAt,
          cancelling_at: r.cancellingAt,
          cancelled_at: r.cancelledAt,
          finished_at: r.finishedAt,
          deleted_at: r.deletedAt,
          expires_at: r.expiresAt,
        }));
        const { rows: got } = await db.pool.query<{ status: string; live: boolean }>(sql, [
          JSON.stringify(json),
          NOW,
        ]);
        expect(got.map((g) => g.status)).toEqual(rows.map((r) => batchLifecycleStatus(r, NOW)));
        expect(got.map((g) => g.live)).toEqual(rows.map((r) => isLive(r, NOW)));
      }),
      { numRuns: 40 },
    );
  });

  it("batches_live_idx's predicate is the live condition's time-independent part", async () => {
    const { rows } = await db.pool.query<{ pred: string }>(
      `SELECT pg_get_expr(i.indpred, i.indrelid) AS pred FROM pg_index i
        WHERE i.indexrelid = to_regclass($1)`,
      [`"${db.schema}".batches_live_idx`],
    );
    const terms = (s: string) =>
      s
        .replace(/[()]/g, '')
        .split(/\s+AND\s+/i)
        .map((t) => t.trim())
        .sort();
    expect(terms(rows[0]!.pred)).toEqual(terms(LIVE_INDEX_PREDICATE));
  });
});
