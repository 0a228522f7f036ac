import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginSql, withTransaction } from '../../src/db/transaction.js';
import { createLockScratch, type LockScratch } from '../support/db.js';

/** withTransaction against a real PostgreSQL: commit, rollback, and a deadline that cancels. */
let scratch: LockScratch;
let pool: pg.Pool;
let locker: pg.Client;
let table: string;

beforeAll(async () => {
  scratch = await createLockScratch('tx');
  ({ pool, locker, table } = scratch);
});

afterAll(async () => {
  await scratch?.close();
});

describe('withTransaction', () => {
  it('commits what fn returns and rolls back what it throws', async () => {
    const got = await withTransaction(pool, async (c) => {
      await c.query(`INSERT INTO ${table} VALUES (1)`);
      return 'ok';
    });
    expect(got).toBe('ok');
    await expect(
      withTransaction(pool, async (c) => {
        await c.query(`INSERT INTO ${table} VALUES (2)`);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const { rows } = await pool.query(`SELECT n FROM ${table} ORDER BY n`);
    expect(rows).toEqual([{ n: 1 }]);
  });

  it('cancels a statement blocked past timeoutMs, frees its connection, and leaves no setting behind', async () => {
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    try {
      const err = await withTransaction(pool, (c) => c.query(`SELECT count(*) FROM ${table}`), {
        timeoutMs: 200,
      }).catch((e: unknown) => e);
      // PostgreSQL's query_canceled: the statement stopped waiting on the lock.
      expect((err as { code?: string }).code).toBe('57014');
      // Nothing of ours still waits on the lock while it is held.
      const { rows } = await locker.query(
        `SELECT count(*)::int AS n FROM pg_locks WHERE relation = $1::regclass AND NOT granted`,
        [table],
      );
      expect(rows[0].n).toBe(0);
    } finally {
      await locker.query('ROLLBACK');
    }
    // The client went back to the pool with the session's own statement_timeout.
    const clients = await Promise.all([pool.connect(), pool.connect()]);
    try {
      for (const c of clients) {
        const { rows } = await c.query('SHOW statement_timeout');
        expect(rows[0].statement_timeout).toBe('0');
      }
    } finally {
      for (const c of clients) c.release();
    }
  });

  it('opens the transaction with its settings in one statement and refuses a nonsensical deadline', () => {
    expect(beginSql()).toBe('BEGIN');
    expect(beginSql({ timeoutMs: 1500.7, asyncCommit: true })).toBe(
      'BEGIN; SET LOCAL statement_timeout = 1500; SET LOCAL synchronous_commit = off',
    );
    expect(beginSql({ timeoutMs: 2000, idleTimeoutMs: 2000 })).toBe(
      'BEGIN; SET LOCAL statement_timeout = 2000; SET LOCAL idle_in_transaction_session_timeout = 2000',
    );
    expect(() => beginSql({ timeoutMs: 0 })).toThrow(RangeError);
    expect(() => beginSql({ idleTimeoutMs: 0 })).toThrow(RangeError);
  });
});
