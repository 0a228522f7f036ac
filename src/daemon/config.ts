import type { Registry } from 'prom-client';
import type { RetryableStatuses, ShouldRetry } from '../domain/retry.js';
import type { Limiter } from './limiter.js';
import type { Logger } from './logger.js';
import type { UpstreamClient } from './upstream-client.js';

/**
 * The daemon's configuration. Every field has a default (DEFAULT_DAEMON_CONFIG); callers pass a
 * partial object to `new PostgresRequestManager(pool, config)`.
 *
 * | setting                   | default   | meaning |
 * |---------------------------|-----------|---------|
 * | modelConcurrencyLimits    | {}        | in-flight limit per model, held across all daemons on the database |
 * | defaultModelConcurrency   | 16        | limit for models not listed |
 * | maxRetries                | 5         | retries after the first attempt for retriable errors |
 * | backoffMs / backoffFactor | 1000 / 2  | full-jitter backoff: random(0, min(maxBackoffMs, backoffMs·factor^attempt)) |
 * | maxBackoffMs              | 60000     | cap of one backoff; never shorter than the upstream's retry-after |
 * | requestTimeoutMs          | 600000    | one HTTP attempt, headers and body (long generations take minutes) |
 * | maxResponseBytes          | 67108864 (64 MiB) | largest upstream answer body; past it the attempt fails with `response_too_large` (final) and the connection is cut; 0: no cap. Memory held by answers stays ≤ this × requests in flight |
 * | claimBatchSize            | 100       | most rows one claim takes for one model |
 * | pollIntervalMs            | 1000      | fallback poll when no notification arrives |
 * | heartbeatIntervalMs       | 5000      | how often a daemon proves it is alive |
 * | deadDaemonAfterMs         | 30000     | a daemon silent this long is dead: its requests are reclaimed |
 * | leaseMs                   | requestTimeoutMs + 60000 | a claimed/processing row whose lease ran out is reclaimed |
 * | shutdownGraceMs           | 30000     | stop(): how long in-flight requests may finish before being handed back |
 * | budgetIntervalMs          | 250       | how often a daemon holding or wanting slots rebalances its share of the global limits (src/store/sql/budget.ts) |
 * | maxDbWriters              | 4         | concurrent database writes, apart from HTTP concurrency (the hot claim and write statements run up to min(2, this) at once) |
 * | dbTimeoutMs               | 15000     | deadline of every daemon query/transaction (a dropped connection must not hang it) |
 * | synchronousCommit         | true      | false: claim/write transactions commit without waiting for the WAL flush (faster; a PostgreSQL crash may lose the last ~0.6 s of claims and results, whose requests are then sent again) |
 * | retryableStatuses         | 408, 429, 500, 502, 503, 504, 529 | HTTP statuses retried: a list replaces these, `{ add, remove }` edits them (src/domain/retry.ts) |
 * | shouldRetry               | none      | `(outcome, request) => boolean \| undefined`: true retries, false makes final, undefined leaves it to the statuses |
 * | handleSignals             | false     | stop() on SIGTERM / SIGINT (off: a library should not take over signals; the CLI leaves it off and handles signals itself, src/cli/signals.ts) |
 * | metricsRegistry           | private   | prom-client Registry for the daemon's metrics (never the global default) |
 * | logger                    | stderr JSON, info+ | structured log sink; entries never contain API keys |
 * | upstreamClient            | undici Agent | sends one HTTP attempt (src/daemon/upstream-client.ts) |
 * | limiter                   | claimBatchSize per claim | a daemon's appetite per model below the global limit (src/daemon/limiter.ts) |
 */
export interface DaemonConfig {
  modelConcurrencyLimits: Record<string, number>;
  defaultModelConcurrency: number;
  maxRetries: number;
  backoffMs: number;
  backoffFactor: number;
  maxBackoffMs: number;
  requestTimeoutMs: number;
  /**
   * Largest upstream answer body in bytes (0: no cap). 64 MiB holds large embedding answers: 2,048
   * inputs × 1,536 dimensions is ≈ 60 MB as pretty-printed JSON floats and ≈ 17 MB as base64;
   * 2,048 × 3,072 floats needs a larger cap.
   */
  maxResponseBytes: number;
  claimBatchSize: number;
  pollIntervalMs: number;
  heartbeatIntervalMs: number;
  deadDaemonAfterMs: number;
  leaseMs?: number;
  shutdownGraceMs: number;
  budgetIntervalMs: number;
  maxDbWriters: number;
  dbTimeoutMs: number;
  synchronousCommit: boolean;
  /** HTTP statuses retried; a list replaces the defaults, `{ add, remove }` edits them. */
  retryableStatuses?: RetryableStatuses;
  /** The caller's retry rule, asked after every attempt (see ShouldRetry). */
  shouldRetry?: ShouldRetry;
  handleSignals: boolean;
  metricsRegistry?: Registry;
  logger?: Logger;
  upstreamClient?: UpstreamClient;
  limiter?: Limiter;
  /**
   * Routes a request to its upstream at dispatch time. When it returns an endpoint or apiKey, they
   * replace the template's (the API server stores no upstream keys; it routes by model here).
   */
  upstreamRouter?: UpstreamRouter;
}

export interface UpstreamRoute {
  /** Upstream base URL, e.g. "https://api.openai.com". */
  endpoint?: string;
  /** Upstream API key (never logged, never stored by the server). */
  apiKey?: string;
}

/** Picks the upstream for a model. */
export interface UpstreamRouter {
  /** The route for `model`, or undefined to use the template's own endpoint and key. */
  route(model: string): UpstreamRoute | undefined;
}

export const DEFAULT_DAEMON_CONFIG: DaemonConfig = {
  modelConcurrencyLimits: {},
  defaultModelConcurrency: 16,
  maxRetries: 5,
  backoffMs: 1000,
  backoffFactor: 2,
  maxBackoffMs: 60_000,
  requestTimeoutMs: 600_000,
  maxResponseBytes: 64 * 1024 * 1024,
  claimBatchSize: 100,
  pollIntervalMs: 1000,
  heartbeatIntervalMs: 5000,
  deadDaemonAfterMs: 30_000,
  shutdownGraceMs: 30_000,
  budgetIntervalMs: 250,
  maxDbWriters: 4,
  dbTimeoutMs: 15_000,
  synchronousCommit: true,
  handleSignals: false,
};

export function resolveDaemonConfig(partial: Partial<DaemonConfig> = {}): DaemonConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  return { ...DEFAULT_DAEMON_CONFIG, ...defined } as DaemonConfig;
}

export function leaseMs(config: DaemonConfig): number {
  return config.leaseMs ?? config.requestTimeoutMs + 60_000;
}
