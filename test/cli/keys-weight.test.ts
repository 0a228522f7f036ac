import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { runCli } from './support/cli.js';

/* `fusillade keys set-weight --owner NAME N` (issue 15 item 1): the weight the claim shares by. */

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb({ max: 2 });
});
afterAll(async () => {
  await db.close();
});

const dbArgs = () => ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];

describe('keys set-weight', () => {
  it("sets an owner's weight, says what it was, and the library reads it", async () => {
    const first = await runCli(['keys', 'set-weight', '--owner', 'alice', '3', ...dbArgs()]);
    expect([first.code, first.stderr]).toEqual([0, '']);
    expect(first.stdout.trim()).toBe('owner "alice" now has weight 3 (was 1)');
    const again = await runCli(['keys', 'set-weight', '--owner', 'alice', '0.5', ...dbArgs()]);
    expect(again.stdout.trim()).toBe('owner "alice" now has weight 0.5 (was 3)');
    expect(await db.manager().ownerWeights.list()).toMatchObject([{ owner: 'alice', weight: 0.5 }]);
  });

  it.each(['0', 'abc'])('refuses weight %s with one line on stderr and stores nothing', async (w) => {
    const r = await runCli(['keys', 'set-weight', '--owner', 'bob', w, ...dbArgs()]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/weight must be a number above 0/);
    const { rows } = await db.pool.query(`SELECT 1 FROM "${db.schema}".owner_weights WHERE owner = 'bob'`);
    expect(rows).toHaveLength(0);
  });

  it('the library refuses a bad weight with a ValidationError', async () => {
    await expect(db.manager().ownerWeights.set('carol', 0)).rejects.toMatchObject({
      name: 'ValidationError',
    });
    await expect(db.manager().ownerWeights.set('carol', Number.NaN)).rejects.toThrow(/weight must be/);
  });
});
