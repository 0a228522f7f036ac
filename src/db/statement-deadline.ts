import { AsyncLocalStorage } from 'node:async_hooks';
import type pg from 'pg';
import { withTransaction } from './transaction.js';

/**
 * A deadline PostgreSQL enforces on the statements run for one piece of work (an API request):
 * inside `withStatementDeadline(ms, fn)`, each one-shot `query()` on a `deadlinePool` runs as
 * `BEGIN; SET LOCAL statement_timeout = ms` / the statement / `COMMIT`, so a statement stuck behind
 * a lock is cancelled by the server and its connection comes back to the pool, rather than waiting
 * on after the caller gave up. Outside such a scope (the daemon sharing the pool) the pool behaves
 * as the one it wraps.
 *
 * Only one-shot reads and writes are bounded: work on a client taken with connect() (transactions
 * such as a batch's creation, COPY uploads, result streams) keeps its own rules, so a write the
 * caller stopped waiting for still completes. The cost is two round trips per bounded statement.
 */
const deadline = new AsyncLocalStorage<number>();

/** Runs `fn` with `ms` as the statement deadline of the deadline pools' one-shot queries it makes. */
export function withStatementDeadline<T>(ms: number, fn: () => T): T {
  return deadline.run(ms, fn);
}

/** `pool`, with its one-shot query() bounded by the current withStatementDeadline scope, if any. */
export function deadlinePool(pool: pg.Pool): pg.Pool {
  const query = (...args: unknown[]): unknown => {
    const ms = deadline.getStore();
    const first = args[0] as { submit?: unknown } | string;
    const callback = typeof args[args.length - 1] === 'function';
    const submittable = typeof first === 'object' && first !== null && typeof first.submit === 'function';
    if (ms === undefined || callback || submittable) {
      return (pool.query as (...a: unknown[]) => unknown)(...args);
    }
    return withTransaction(
      pool,
      (client) => (client.query as (...a: unknown[]) => Promise<pg.QueryResult>)(...args),
      { timeoutMs: ms },
    );
  };
  return new Proxy(pool, {
    get(target, prop) {
      if (prop === 'query') return query;
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * Runs `fn` outside any withStatementDeadline scope: for reads after a write has committed, whose
 * failure at a deadline would answer 503 for work that is done and invite the client to repeat it.
 */
export function withoutStatementDeadline<T>(fn: () => T): T {
  return deadline.exit(fn);
}
