import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimSql } from '../../src/db/sql/queue/claim.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

const DAEMON = '00000000-0000-0000-0000-0000000c1a1e';

/**
 * The claim reaches each row's template through the batch's file and the row's line
 * (request_templates_file_line_idx), checked against the row's template id, and falls back to the
 * id when the template is not at that line (claim.ts): either way each claimed row comes back with
 * its own template's custom_id.
 */
describe('the claim returns each row with its own template', () => {
  let db: TestDb;
  let s: string;
  let routeId: number;
  beforeAll(async () => {
    db = await createTestDb();
    s = `"${db.schema}"`;
    const m = db.manager();
    const fileId = await m.createFile(
      'input.jsonl',
      null,
      Array.from({ length: 20 }, (_, i) => template(i)),
    );
    await m.createBatch(fileId);
    await db.pool.query(`INSERT INTO ${s}.daemons (id, host, pid) VALUES ($1, 'test', 0)`, [DAEMON]);
    await db.pool.query(
      `INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted) VALUES ('gpt-test', $1, 100, 100)`,
      [DAEMON],
    );
    const { rows } = await db.pool.query(`SELECT DISTINCT route_id FROM ${s}.requests`);
    routeId = rows[0].route_id;
  });
  afterAll(async () => {
    await db.close();
  });

  const claim = async (want: number) =>
    (
      await db.pool.query(claimSql(s), [['gpt-test'], [want], [0], DAEMON, 60_000, [`{${routeId}}`]])
    ).rows.map((r) => ({ id: r.id as string, customId: r.custom_id as string }));

  const ownTemplates = async (ids: string[]) => {
    const { rows } = await db.pool.query(
      `SELECT r.id, t.custom_id FROM ${s}.requests r JOIN ${s}.request_templates t ON t.id = r.template_id
        WHERE r.id = ANY ($1::uuid[])`,
      [ids],
    );
    return new Map(rows.map((r) => [r.id as string, r.custom_id as string]));
  };

  it('through the (file, line) index', async () => {
    const got = await claim(5);
    expect(got).toHaveLength(5);
    const own = await ownTemplates(got.map((g) => g.id));
    for (const g of got) expect(g.customId).toBe(own.get(g.id));
  });

  it('by template id when the row is not at its template line', async () => {
    // Shift the remaining rows' lines away from their templates' (and swap two onto each other's).
    await db.pool.query(`UPDATE ${s}.requests SET line_number = line_number + 1000 WHERE state = 'pending'`);
    await db.pool.query(
      `WITH two AS (SELECT id, line_number FROM ${s}.requests WHERE state = 'pending' ORDER BY line_number LIMIT 2)
       UPDATE ${s}.requests r SET line_number = CASE WHEN r.line_number = (SELECT min(line_number) FROM two)
                                                    THEN (SELECT max(line_number) FROM two) - 1000
                                                    ELSE (SELECT min(line_number) FROM two) - 1000 END
         FROM two WHERE r.id = two.id`,
    );
    const got = await claim(15);
    expect(got).toHaveLength(15);
    const own = await ownTemplates(got.map((g) => g.id));
    for (const g of got) expect(g.customId).toBe(own.get(g.id));
  });
});
