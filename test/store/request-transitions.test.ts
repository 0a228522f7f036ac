import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  REQUEST_STATES,
  REQUEST_TRANSITIONS,
  type RequestState,
  TERMINAL_STATES,
} from '../../src/domain/request-state.js';
import { createTestDb, type TestDb, template } from '../support/db.js';

/**
 * The database's own guard on request states (the terminal-row trigger and the CHECKs of migration
 * 0001) against the transition table of src/domain/request-state.ts: out of a terminal state, a
 * change is refused exactly when the table does not list it. (Changes between pending, claimed and
 * processing are guarded by each statement's WHERE clause, not by the database.)
 */

/** The columns each state carries, so that only the trigger (not a CHECK) can refuse a change. */
const FIELDS: Record<RequestState, string> = {
  pending: `daemon_id = NULL, claimed_at = NULL, lease_expires_at = NULL, started_at = NULL, completed_at = NULL`,
  claimed: `daemon_id = gen_random_uuid(), claimed_at = now(), lease_expires_at = now() + interval '1 hour',
            started_at = NULL, completed_at = NULL`,
  processing: `daemon_id = gen_random_uuid(), claimed_at = now(), lease_expires_at = now() + interval '1 hour',
               started_at = now(), completed_at = NULL`,
  completed: `completed_at = now(), response_status = 200, response_body = '{}'`,
  failed: `completed_at = now(), response_status = 400, response_body = '{}', error_code = 'http_400'`,
  canceled: `completed_at = now(), error_code = 'batch_cancelled'`,
};

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb({ max: 2 });
});
afterAll(() => db.close());

describe('request transitions', () => {
  it('the terminal-row trigger refuses exactly the changes out of a terminal state the table does not list', async () => {
    const pairs = REQUEST_STATES.flatMap((from) =>
      REQUEST_STATES.filter((to) => to !== from).map((to) => [from, to] as const),
    );
    const manager = db.manager();
    const fileId = await manager.createFile(
      'in.jsonl',
      null,
      pairs.map((_, i) => template(i)),
    );
    const batchId = await manager.createBatch(fileId);
    const { rows } = await db.pool.query<{ id: string }>(
      `SELECT id FROM "${db.schema}".requests WHERE batch_id = $1 ORDER BY line_number`,
      [batchId],
    );
    const listed = new Set(REQUEST_TRANSITIONS.map((t) => `${t.from}->${t.to}`));
    const refused: string[] = [];
    for (const [i, [from, to]] of pairs.entries()) {
      const id = rows[i]!.id;
      const update = (state: RequestState) =>
        db.pool.query(`UPDATE "${db.schema}".requests SET state = $2, ${FIELDS[state]} WHERE id = $1`, [
          id,
          state,
        ]);
      await update(from); // from pending: never refused
      const ok = await update(to).then(
        () => true,
        (err: { code?: string }) => {
          expect(err.code).toBe('23514'); // check_violation, raised by the trigger
          return false;
        },
      );
      if (!ok) refused.push(`${from}->${to}`);
    }
    const expected = pairs
      .filter(([from, to]) => TERMINAL_STATES.includes(from) && !listed.has(`${from}->${to}`))
      .map(([from, to]) => `${from}->${to}`);
    expect(refused.sort()).toEqual(expected.sort());
  });

  it('every transition of the table starts and ends in a known state, and none leaves completed or canceled', () => {
    for (const t of REQUEST_TRANSITIONS) {
      expect(REQUEST_STATES).toContain(t.from);
      expect(REQUEST_STATES).toContain(t.to);
      expect(['completed', 'canceled']).not.toContain(t.from);
    }
  });
});
