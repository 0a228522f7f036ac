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

/**
 * For work whose outcome matters after its deadline (the daemon's claim): at the deadline the caller
 * gets QueryTimeoutError at once, but the client is kept until `fn` settles on its own (a
 * server-side statement_timeout ends it), up to `settleMs` more, and only then released (destroyed
 * if it did not settle or its connection failed). `onAbandoned` receives a promise of that moment:
 * true when `fn` ended with an answer from the server (a result, or an error such as a
 * statement_timeout's 57014), so whatever it committed is committed by then; false when it did not
 * settle in time or its connection failed (outcome unknown).
 */
export interface Abandon {
  settleMs: number;
  onAbandoned(over: Promise<boolean>): void;
}

/**
 * Runs `fn` on a pooled client; the whole of it (connect included) must finish within `ms`. At the
 * deadline the client is destroyed (its connection state is unknown), unless `abandon` says to wait
 * for `fn`'s own end first.
 */
export async function withClient<T>(
  pool: pg.Pool,
  ms: number,
  what: string,
  fn: (client: pg.PoolClient) => Promise<T>,
  abandon?: Abandon,
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
  const release = () => {
    held.off('error', onError);
    held.release(broken ?? undefined);
  };
  // Called on the next tick so that a synchronous throw takes the same path as a rejection.
  const work = Promise.resolve(held).then(fn);
  let timedOut = false;
  try {
    return await withDeadline(work, ms, what, () => {
      timedOut = true;
      if (!abandon) broken = new QueryTimeoutError(what, ms);
    });
  } catch (err) {
    // Connection-level failures leave the client unusable: let the pool discard it.
    if (!timedOut && !broken && isConnectionError(err)) broken = err as Error;
    throw err;
  } finally {
    if (timedOut && abandon) {
      abandon.onAbandoned(
        outcome(work, abandon.settleMs).then((end) => {
          if (end === false) broken ??= new QueryTimeoutError(what, abandon.settleMs);
          else if (end !== true && isConnectionError(end)) broken ??= end;
          release();
          return end === true || (end !== false && !isConnectionError(end));
        }),
      );
    } else {
      release();
    }
  }
}

/**
 * How `work` ends within `ms`: true (resolved), its error (rejected), or false (still running). An
 * error that is not the connection's own still means the work ended (a statement_timeout's 57014).
 */
function outcome(work: Promise<unknown>, ms: number): Promise<true | false | Error> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    work.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      (err) => {
        clearTimeout(timer);
        resolve(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
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
