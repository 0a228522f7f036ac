import type pg from 'pg';
import type { AttemptOutcome } from '../domain/retry.js';

/*
 * The contracts between the daemon and whoever starts it: the database it runs on, the handle it
 * gives back, and what a caller may plug in (DaemonConfig.upstreamClient, DaemonConfig.limiter).
 * The default implementations live in src/daemon/; the composition roots (src/manager, src/server,
 * src/cli) start daemons through these, so src/daemon imports neither them nor src/store.
 */

/** The database a daemon works on: a pool and fusillade's schema in it. */
export interface DaemonDatabase {
  readonly pool: pg.Pool;
  /** Unquoted schema name (the notification channel is derived from it). */
  readonly schemaName: string;
  /** Quoted schema name for inlining in SQL, e.g. `"fusillade"`. */
  readonly schema: string;
}

/** A running daemon. */
export interface DaemonHandle {
  /** The daemon's id in the daemons table. */
  readonly id: string;
  /** Stops claiming, lets in-flight requests finish within the grace period, hands the rest back. */
  stop(): Promise<void>;
  /** Resolves when the daemon has stopped (by stop() or a fatal error). */
  readonly done: Promise<void>;
}

/**
 * How the daemon talks to upstreams: one attempt in, one outcome out. The default (src/daemon/upstream-client.ts) keeps
 * an undici keep-alive Pool per origin (`request()`: 28k req/s on loopback against 4.1k for fetch,
 * measured on this machine class). Tests or callers may supply another implementation through the daemon config.
 */
export interface UpstreamRequest {
  /** Upstream base URL (no /v1) + the template's path. */
  origin: string;
  path: string;
  method: string;
  headers: Record<string, string>;
  body: string;
}

export interface UpstreamClient {
  /**
   * Sends one attempt. Resolves with the HTTP answer or a non-HTTP error outcome (never rejects for
   * upstream trouble). When `signal` aborts, resolves with {kind:'error', code:'aborted'}.
   */
  send(request: UpstreamRequest, signal: AbortSignal): Promise<AttemptOutcome>;
  close(): Promise<void>;
}

/**
 * How many more requests of a model this daemon wants per claim. The global ceiling is the
 * model_limits row, shared between daemons as slot budgets (src/db/sql/queue/budget.ts) and enforced
 * by each claim against the daemon's budget row; the limiter only shapes one daemon's appetite
 * below it: `want` caps each claim, and what a daemon asks of the budget (in use + want), so an
 * adaptive limiter that wants less also leaves the slots to other daemons. The default asks for up
 * to claimBatchSize per claim. Adaptive 429 concurrency and RPM/TPM budgets plug in here later
 * (onOutcome sees every attempt). A limiter that throws is logged: `want` then counts as 0 (nothing
 * claimed for the model), a throwing `onOutcome` is ignored.
 */
export interface Limiter {
  /** Rows of `model` to ask for in the next claim (0 = none), given this daemon's in-flight count. */
  want(model: string, localInFlight: number): number;
  /** Called after every attempt; `throttled` is a 429/529 answer. */
  onOutcome(model: string, outcome: { throttled: boolean; latencyMs: number }): void;
}
