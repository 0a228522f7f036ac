import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueryTimeoutError, withClient } from '../../src/db/client.js';
import { createLockScratch, type LockScratch } from '../support/db.js';

/**
 * withClient's `abandon`: work given up on at its deadline keeps its connection until it ends at
 * the server, and says how it ended. The work waits for a lock this test holds, so the deadline is
 * certain to pass first whatever the machine's load.
 */
let scratch: LockScratch;
let pool: pg.Pool;
let locker: pg.Client;
let table: string;

beforeAll(async () => {
  scratch = await createLockScratch('client');
  ({ pool, locker, table } = scratch);
});

afterAll(async () => {
  await scratch?.close();
});

describe('withClient with abandon', () => {
  it('throws at the deadline, then reports the outcome once the work commits, and keeps the connection', async () => {
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    let over: Promise<boolean> | undefined;
    let ended: boolean | undefined;
    let pid = 0;
    await expect(
      withClient(
        pool,
        200,
        'insert',
        (c) => {
          pid = (c as unknown as { processID: number }).processID;
          return c.query(`INSERT INTO ${table} VALUES (1)`);
        },
        {
          settleMs: 600_000,
          onAbandoned: (p) => {
            over = p;
            void p.then((v) => {
              ended = v;
            });
          },
        },
      ),
    ).rejects.toBeInstanceOf(QueryTimeoutError);
    expect(over).toBeDefined();
    // The insert waits for the lock at the server: no outcome while it does.
    await expect
      .poll(async () => {
        const { rows } = await pool.query(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            WHERE NOT l.granted AND c.relname = $1`,
          [table],
        );
        return rows[0].n;
      })
      .toBe(1);
    expect(ended).toBeUndefined();
    await locker.query('COMMIT');
    // It committed after its deadline: the outcome says so, and the row is there.
    expect(await over).toBe(true);
    const { rows } = await pool.query(`SELECT n FROM ${table}`);
    expect(rows).toEqual([{ n: 1 }]);
    // Its connection went back to the pool rather than being closed: it was never in doubt.
    const { rows: alive } = await locker.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
    expect(alive).toHaveLength(1);
  });

  it('a statement_timeout ending the work is an outcome too (nothing committed)', async () => {
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    let over: Promise<boolean> | undefined;
    try {
      await expect(
        withClient(
          pool,
          200,
          'insert',
          async (c) => {
            await c.query('BEGIN; SET LOCAL statement_timeout = 1000');
            try {
              await c.query(`INSERT INTO ${table} VALUES (2)`);
              await c.query('COMMIT');
            } catch (err) {
              await c.query('ROLLBACK');
              throw err;
            }
          },
          {
            settleMs: 600_000,
            onAbandoned: (p) => {
              over = p;
            },
          },
        ),
      ).rejects.toBeInstanceOf(QueryTimeoutError);
      // The server cancels the insert while the lock is still held: it cannot commit.
      expect(await over).toBe(true);
    } finally {
      await locker.query('COMMIT');
    }
    const { rows } = await pool.query(`SELECT n FROM ${table} WHERE n = 2`);
    expect(rows).toEqual([]);
  });
});
