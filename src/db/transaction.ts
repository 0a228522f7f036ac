import type pg from 'pg';
import { isConnectionError } from './client.js';

/** How a transaction runs. */
export interface TransactionOptions {
  /**
   * Each statement of the transaction that runs longer is cancelled by PostgreSQL
   * (`SET LOCAL statement_timeout`): its locks and its connection are given back, and the
   * transaction fails with SQLSTATE 57014. Unset: the session's own statement_timeout.
   */
  timeoutMs?: number;
  /** `SET LOCAL synchronous_commit = off`: the commit does not wait for the WAL flush. */
  asyncCommit?: boolean;
  /**
   * `SET LOCAL idle_in_transaction_session_timeout`: PostgreSQL ends the session if the client sits
   * this long between two statements of the transaction (a process frozen by SIGSTOP or a VM pause
   * cannot run its own deadlines), so the transaction's locks do not outlive the pause.
   */
  idleTimeoutMs?: number;
}

/** The statement opening a transaction with `options` (one round trip whatever is set). */
export function beginSql(options: TransactionOptions = {}): string {
  const parts = ['BEGIN'];
  if (options.timeoutMs !== undefined) {
    const ms = Math.floor(options.timeoutMs);
    if (!Number.isFinite(ms) || ms < 1)
      throw new RangeError(`timeoutMs must be at least 1, got ${options.timeoutMs}`);
    parts.push(`SET LOCAL statement_timeout = ${ms}`);
  }
  if (options.idleTimeoutMs !== undefined) {
    const ms = Math.floor(options.idleTimeoutMs);
    if (!Number.isFinite(ms) || ms < 1)
      throw new RangeError(`idleTimeoutMs must be at least 1, got ${options.idleTimeoutMs}`);
    parts.push(`SET LOCAL idle_in_transaction_session_timeout = ${ms}`);
  }
  if (options.asyncCommit) parts.push('SET LOCAL synchronous_commit = off');
  return parts.join('; ');
}

/**
 * Runs `fn` in a transaction on a client the caller holds: commits what it returns, rolls back
 * what it throws (and rethrows). SET LOCAL settings end with the transaction, so the client goes
 * back to its pool as it came (PgBouncer's transaction mode included).
 */
export async function inTransaction<T>(
  client: pg.ClientBase,
  fn: (client: pg.ClientBase) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  await client.query(beginSql(options));
  try {
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Runs `fn` in a transaction on a pooled client (see inTransaction). A client whose connection
 * failed is discarded rather than returned to the pool.
 */
export async function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  // A connection that dies between two statements emits 'error' on the checked-out client, thrown as
  // unhandled without a listener; the next statement fails and reports it instead.
  const onError = (err: Error) => {
    broken = err;
  };
  client.on('error', onError);
  try {
    return await inTransaction(client, () => fn(client), options);
  } catch (err) {
    if (!broken && isConnectionError(err)) broken = err as Error;
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}
