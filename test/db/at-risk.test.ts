import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markAtRiskSql } from '../../src/db/sql/queue/at-risk.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

/*
 * The at-risk verdict (src/db/sql/queue/at-risk.ts) counts a batch's recent completions only up to
 * what proves it on track, and its remaining rows only when that proof fails. Its verdicts must be
 * those of the plain formula over exact counts, for every mix of age, deadline, progress and mark:
 * each case is a batch of its own (no daemon runs), its rows completed in the last minute or
 * pending, judged by one run of the statement.
 */

const MIN_SPAN_S = 5;
const LINES = 20;

/** The plain formula over exact counts (what the statement computed before it bounded its counts). */
function plainVerdict(c: {
  remaining: number;
  recent: number;
  span: number;
  secondsLeft: number;
  raised: boolean;
}) {
  if (c.span < MIN_SPAN_S || c.remaining === 0) return c.raised && c.remaining > 0;
  if (!c.raised) return c.remaining * c.span > c.recent * c.secondsLeft;
  return c.remaining * c.span > (c.recent * c.secondsLeft) / 2;
}

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb({ max: 4 });
});
afterAll(async () => {
  await db.close();
});

describe('deadlines at risk', () => {
  it('gives the plain formula verdict for every mix of age, deadline, progress and mark', async () => {
    const m = db.manager();
    const s = `"${db.schema}"`;
    const cases: {
      id: string;
      expected: boolean;
      done: number;
      span: number;
      left: number;
      raised: boolean;
    }[] = [];
    const templates = Array.from({ length: LINES }, (_, i) => template(i + 1));
    for (const done of [0, 1, 5, 19, 20]) {
      for (const span of [2, 30]) {
        for (const left of [30, 100, 1_000, 86_400]) {
          for (const raised of [false, true]) {
            const fileId = await m.createFile('in.jsonl', null, templates);
            const id = await m.createBatch(fileId);
            await db.pool.query(
              `UPDATE ${s}.requests SET state = 'completed', completed_at = now() - interval '10 seconds',
                      response_status = 200, response_body = '{}'
                WHERE batch_id = $1 AND line_number <= $2`,
              [id, done],
            );
            const expected = plainVerdict({
              remaining: LINES - done,
              recent: done,
              span,
              secondsLeft: left,
              raised,
            });
            cases.push({ id, expected, done, span, left, raised });
          }
        }
      }
    }
    // Ages and deadlines are set just before the judgement (the set-up takes seconds under load).
    await db.pool.query(
      `UPDATE ${s}.batches b SET in_progress_at = now() - c.span * interval '1 second',
              expires_at = now() + c.left_s * interval '1 second',
              raised_at = CASE WHEN c.raised THEN now() END
         FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bool[]) AS c(id, span, left_s, raised)
        WHERE b.id = c.id`,
      [
        cases.map((c) => c.id),
        cases.map((c) => c.span),
        cases.map((c) => c.left),
        cases.map((c) => c.raised),
      ],
    );
    const { rows } = await db.pool.query<{ at_risk: number }>(markAtRiskSql(s), [MIN_SPAN_S]);
    const marked = await db.pool.query<{ id: string; raised: boolean }>(
      `SELECT id, raised_at IS NOT NULL AS raised FROM ${s}.batches WHERE id = ANY($1)`,
      [cases.map((c) => c.id)],
    );
    const raisedNow = new Map(marked.rows.map((r) => [r.id, r.raised]));
    const got = cases.map((c) => ({ ...c, expected: raisedNow.get(c.id) }));
    expect(got).toEqual(cases);
    // Both verdicts occur, so the comparison is not vacuous.
    const atRisk = cases.filter((c) => c.expected).length;
    expect(atRisk).toBeGreaterThan(0);
    expect(atRisk).toBeLessThan(cases.length);
    expect(rows[0]!.at_risk).toBe(atRisk);
  });
});
