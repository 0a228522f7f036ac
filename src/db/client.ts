import type pg from 'pg';

/**
 * Database access for the daemon's periodic work with a deadline on everything (rule 10 of
 * docs/decisions/0003: a silently dropped connection once hung a claim loop). A client whose query overran is
 * destroyed rather than returned to the pool, since its connection state is unknown.
 */
export class QueryTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what} did not finish within ${ms} ms`);
    this.name = 'QueryTimeoutError';
  }
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new QueryTimeoutError(what, ms));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Runs `fn` on a pooled client; the whole of it (connect included) must finish within `ms`. */
export async function withClient<T>(
  pool: pg.Pool,
  ms: number,
  what: string,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const connecting = pool.connect();
  const held = await withDeadline(connecting, ms, `${what} (connect)`, () => {
    // A connection that arrives after we gave up goes straight back.
    connecting.then(
      (c) => c.release(),
      () => {},
    );
  });
  let broken: Error | undefined;
  // A connection that dies between two queries of a transaction emits 'error' on the client, which
  // would be thrown as unhandled without a listener; the next query fails and tells us instead.
  const onError = (err: Error) => {
    broken = err;
  };
  held.on('error', onError);
  try {
    return await withDeadline(fn(held), ms, what, () => {
      broken = new QueryTimeoutError(what, ms);
    });
  } catch (err) {
    // Connection-level failures leave the client unusable: let the pool discard it.
    if (!broken && isConnectionError(err)) broken = err as Error;
    throw err;
  } finally {
    held.off('error', onError);
    held.release(broken ?? undefined);
  }
}

/** One statement on a pooled client with a deadline. */
export function query<R extends pg.QueryResultRow = pg.QueryResultRow>(
  pool: pg.Pool,
  ms: number,
  what: string,
  text: string,
  values?: unknown[],
): Promise<pg.QueryResult<R>> {
  return withClient(pool, ms, what, (client) => client.query<R>(text, values));
}

export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (!e) return false;
  if (e.code && /^(08|57P0)/.test(e.code)) return true;
  if (e.code === 'ECONNRESET' || e.code === 'ECONNREFUSED' || e.code === 'EPIPE') return true;
  return /Connection terminated|connection is closed|not queryable|Client has encountered a connection error/i.test(
    e.message ?? '',
  );
}
