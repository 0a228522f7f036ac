import type pg from 'pg';
import type { Registry } from 'prom-client';
import { checkDaemonSettings, DAEMON_DEFAULTS } from '../config/daemon-settings.js';
import type { DaemonSettings } from '../config/schema.js';
import type { ShouldRetry } from '../domain/retry.js';
import type { Limiter, UpstreamClient } from './interfaces.js';
import type { Logger } from './logger.js';

/**
 * The daemon's configuration: its settings (types, ranges, defaults and meanings in
 * src/config/schema.ts, the README's "Daemon settings" table) and the objects it is given. Callers
 * pass a partial object to `new PostgresRequestManager(pool, config)`; missing fields take
 * DEFAULT_DAEMON_CONFIG's values, and settings out of range are refused with a ValidationError.
 */
export interface DaemonConfig extends DaemonSettings {
  /**
   * The caller's retry rule, asked after every attempt: `(outcome, request) => boolean | undefined`;
   * true retries, false makes the failure final, undefined leaves it to retryableStatuses.
   */
  shouldRetry?: ShouldRetry;
  /** prom-client Registry for the daemon's metrics (default: a private one, never the global default). */
  metricsRegistry?: Registry;
  /**
   * Limits the `model` label to these models and those with a configured concurrency or rate limit;
   * every other model's series add up under `model="(other)"`, and per-model limit gauges show only
   * the named models. Unset: every model is named (a library owns its models; the API server, whose
   * tenants name models, sets it to its configured ones).
   */
  metricsModels?: readonly string[];
  /** Structured log sink (default: JSON lines on stderr, info and up); entries never contain API keys. */
  logger?: Logger;
  /**
   * Told when this daemon ends a batch (counts frozen, output files made, finalize-batch.ts), so a
   * caller waiting for it (`fusillade run`) need not poll; other daemons' ends are not told.
   */
  onBatchFinished?: (batchId: string) => void;
  /**
   * Told of each request this daemon's outcome writes ended (completed, failed or canceled), once
   * the write has committed; a write refused as stale is not told, nor are rows other daemons or
   * statements (cancel, expiry) end. `fusillade run` shows its progress from these between counts
   * of the batch, each of which reads every row of it.
   */
  onRequestEnded?: (batchId: string, state: 'completed' | 'failed' | 'canceled') => void;
  /** Sends one HTTP attempt (default: undici, src/daemon/upstream-client.ts). */
  upstreamClient?: UpstreamClient;
  /** A daemon's appetite per model below the global limit (default: claimBatchSize per claim, src/daemon/limiter.ts). */
  limiter?: Limiter;
  /**
   * Where requests go (src/domain/upstream-route.ts). A batch created by a manager with a router
   * records, per template, the router's upstream for its model and the fingerprint of its key; a
   * daemon with a router claims the routes whose upstream and key it holds (and, as every daemon,
   * rows carrying their own key). Without a router, a template's endpoint and key are its route.
   */
  upstreamRouter?: UpstreamRouter;
  /**
   * A direct connection to PostgreSQL (a URL or node-postgres client config), for what needs a
   * session of its own: the daemon's LISTEN and its liveness lock. When given, the manager's pool is
   * taken to be a transaction pooler (PgBouncer in transaction mode): the daemon keeps no session
   * state on it (no named prepared statements, no LISTEN, no session locks). Default: the session
   * opens with the pool's own settings, and hot statements are prepared by name.
   */
  directConnection?: string | pg.ClientConfig;
}

export interface UpstreamRoute {
  /** Upstream base URL, e.g. "https://api.openai.com". */
  endpoint?: string;
  /** Upstream API key (never logged, never stored: rows record its fingerprint). */
  apiKey?: string;
  /**
   * The name batches record instead of the endpoint, for an upstream whose address is local to each
   * process: the built-in mock ("mock") listens on a new port in every process.
   */
  name?: string;
}

/** Picks the upstream for a model. */
export interface UpstreamRouter {
  /** The route for `model`, or undefined to use the template's own endpoint and key. */
  route(model: string): UpstreamRoute | undefined;
  /**
   * Every route route() can give: a daemon declares them as the routes it serves, so the server can
   * tell when no live daemon serves a batch. Without it, a daemon serves what route() gives for the
   * models it sees.
   */
  routes?(): UpstreamRoute[];
}

export const DEFAULT_DAEMON_CONFIG: DaemonConfig = { ...DAEMON_DEFAULTS };

/** The config with defaults filled in; throws a ValidationError when a setting is out of range. */
export function resolveDaemonConfig(partial: Partial<DaemonConfig> = {}): DaemonConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  checkDaemonSettings(defined);
  return { ...DEFAULT_DAEMON_CONFIG, ...defined } as DaemonConfig;
}

export function leaseMs(config: DaemonConfig): number {
  return config.leaseMs ?? config.requestTimeoutMs + 60_000;
}

/**
 * How long after a claim starts its rows may still start their attempts (null: no bound). The lease
 * runs from the claim's commit, later than its start, so from the start it covers at least
 * `leaseMs`; an attempt started within the window ends (requestTimeoutMs) with the rest of the lease,
 * up to 30 s, left for its write. A row queued longer (a rate-limit pause, a stalled pump) goes back
 * to pending: sent after its lease ran out, it could be reclaimed and sent by another daemon too.
 * With the defaults (lease = timeout + 60 s) the window is 30 s; a lease no longer than the timeout
 * leaves nothing to protect, and no bound.
 */
export function sendWindowMs(config: DaemonConfig): number | null {
  const spare = leaseMs(config) - config.requestTimeoutMs;
  if (spare <= 0) return null;
  return spare - Math.min(30_000, spare / 2);
}

/**
 * The client config of the daemon's session connection (LISTEN, liveness lock): the direct
 * connection when one is given, else the pool's.
 */
export function sessionConnection(config: DaemonConfig, pool: pg.Pool): pg.ClientConfig {
  const direct = config.directConnection;
  if (direct === undefined) return pool.options as pg.ClientConfig;
  const base = typeof direct === 'string' ? { connectionString: direct } : direct;
  return { application_name: 'fusillade', ...base };
}
