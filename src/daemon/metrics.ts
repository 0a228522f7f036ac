import { createRequire } from 'node:module';
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelRateStatus } from './rate-policy.js';

/**
 * The `model` label of every model outside the configuration when the metrics are limited to the
 * configured models (DaemonConfig.metricsModels): a model's name can be a tenant's (a fine-tune's),
 * and one series per name any tenant sends would be both a leak and unbounded.
 */
export const OTHER_MODELS_LABEL = '(other)';

/** Which models the metrics name: every model, or only these (the rest as OTHER_MODELS_LABEL). */
export type MetricsModels = 'all' | ReadonlySet<string>;

/**
 * The models a daemon's metrics name: `all` unless `metricsModels` is given, else those and every
 * model with a configured concurrency or rate limit.
 */
export function metricsModelsOf(config: {
  metricsModels?: readonly string[];
  modelConcurrencyLimits?: Record<string, number>;
  modelRateLimits?: Record<string, unknown>;
}): MetricsModels {
  if (config.metricsModels === undefined) return 'all';
  return new Set([
    ...config.metricsModels,
    ...Object.keys(config.modelConcurrencyLimits ?? {}),
    ...Object.keys(config.modelRateLimits ?? {}),
  ]);
}

/**
 * The daemon's Prometheus metrics, registered on the registry the caller passes (the API server
 * serves its own), never prom-client's global default: several daemons may run in one process.
 * Daemons sharing a registry share the metrics (get-or-create), labelled by daemon. Without a
 * registry nobody can read them: the instruments do nothing (silentMetrics).
 */
export interface DaemonMetrics {
  /** The registry they are on; null for silent metrics. */
  registry: Registry | null;
  /** The `model` label for a model: its name, or OTHER_MODELS_LABEL outside the named models. */
  model(name: string): string;
  /** Whether a model is named: per-model settings gauges (limits, pauses) show only those. */
  names(model: string): boolean;
  inFlight: Gauge<'daemon' | 'model'>;
  limit: Gauge<'model'>;
  dispatched: Counter<'model'>;
  completed: Counter<'model'>;
  retried: Counter<'model' | 'reason'>;
  failed: Counter<'model' | 'reason'>;
  staleWrites: Counter<'daemon'>;
  latency: Histogram<'model' | 'outcome'>;
  claimDuration: Histogram<'daemon'>;
  queueDepth: Gauge<'model'>;
  /** Live batches that would miss their deadline at their current rate (all daemons' batches). */
  batchesAtRisk: Gauge;
  /** Requests or tokens per minute in force per model (configured, else learned from headers). */
  rateLimit: Gauge<'model' | 'kind'>;
  /** Requests or tokens (estimated) this daemon started in the last minute, per model. */
  rateUsed: Gauge<'daemon' | 'model' | 'kind'>;
  /** Epoch seconds until which a model is paused after a 429 (0: not paused). */
  pausedUntil: Gauge<'model'>;
  /** This daemon's adaptive concurrency per model (models with adaptiveConcurrency only). */
  adaptiveConcurrency: Gauge<'daemon' | 'model'>;
}

function getOrCreate<T>(registry: Registry, name: string, create: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? create();
}

/** Whether a model is named, for metricsModelsOf's answer. */
function namesOf(models: MetricsModels): (model: string) => boolean {
  return models === 'all' ? () => true : (model) => models.has(model);
}

/**
 * One instrument that does nothing, for every kind and every label set (`labels()` returns itself).
 */
const silent = (() => {
  const nothing = () => {};
  const instrument = {
    inc: nothing,
    dec: nothing,
    set: nothing,
    observe: nothing,
    reset: nothing,
    remove: nothing,
    startTimer: () => nothing,
    labels: () => instrument,
  };
  return instrument;
})();

/**
 * Metrics nobody reads (no registry: `fusillade run`, a library daemon started without one). Without
 * them, prom-client (32 files, and the @opentelemetry/api it requires, 51) never loads: 75 ms of CPU
 * on `run`'s start-up, measured alone on the 2-core machine (issue 10), and no label lookups per
 * request.
 */
function silentMetrics(models: MetricsModels): DaemonMetrics {
  const names = namesOf(models);
  const any = silent as unknown as Counter & Gauge & Histogram;
  return {
    registry: null,
    names,
    model: (name) => (names(name) ? name : OTHER_MODELS_LABEL),
    inFlight: any,
    limit: any,
    dispatched: any,
    completed: any,
    retried: any,
    failed: any,
    staleWrites: any,
    latency: any,
    claimDuration: any,
    queueDepth: any,
    batchesAtRisk: any,
    rateLimit: any,
    rateUsed: any,
    pausedUntil: any,
    adaptiveConcurrency: any,
  };
}

const require = createRequire(import.meta.url);

export function createDaemonMetrics(registry?: Registry, models: MetricsModels = 'all'): DaemonMetrics {
  if (registry === undefined) return silentMetrics(models);
  // Loaded here, on first use with a registry (see silentMetrics).
  const { Counter, Gauge, Histogram } = require('prom-client') as typeof import('prom-client');
  const registers = [registry];
  const names = namesOf(models);
  return {
    registry,
    names,
    model: (name) => (names(name) ? name : OTHER_MODELS_LABEL),
    inFlight: getOrCreate(
      registry,
      'fusillade_requests_in_flight',
      () =>
        new Gauge({
          name: 'fusillade_requests_in_flight',
          help: 'Requests this daemon has in flight at the upstream, per model',
          labelNames: ['daemon', 'model'],
          registers,
        }),
    ),
    limit: getOrCreate(
      registry,
      'fusillade_model_concurrency_limit',
      () =>
        new Gauge({
          name: 'fusillade_model_concurrency_limit',
          help: 'Global in-flight limit per model (model_limits), as last seen by a budget rebalance',
          labelNames: ['model'],
          registers,
        }),
    ),
    dispatched: getOrCreate(
      registry,
      'fusillade_requests_dispatched_total',
      () =>
        new Counter({
          name: 'fusillade_requests_dispatched_total',
          help: 'HTTP attempts sent upstream',
          labelNames: ['model'],
          registers,
        }),
    ),
    completed: getOrCreate(
      registry,
      'fusillade_requests_completed_total',
      () =>
        new Counter({
          name: 'fusillade_requests_completed_total',
          help: 'Requests completed with a 2xx answer',
          labelNames: ['model'],
          registers,
        }),
    ),
    retried: getOrCreate(
      registry,
      'fusillade_requests_retried_total',
      () =>
        new Counter({
          name: 'fusillade_requests_retried_total',
          help: 'Attempts that failed retriably and were rescheduled',
          labelNames: ['model', 'reason'],
          registers,
        }),
    ),
    failed: getOrCreate(
      registry,
      'fusillade_requests_failed_total',
      () =>
        new Counter({
          name: 'fusillade_requests_failed_total',
          help: 'Requests that ended failed',
          labelNames: ['model', 'reason'],
          registers,
        }),
    ),
    staleWrites: getOrCreate(
      registry,
      'fusillade_stale_writes_total',
      () =>
        new Counter({
          name: 'fusillade_stale_writes_total',
          help: 'Result writes refused because the row had moved on (reclaimed, cancelled)',
          labelNames: ['daemon'],
          registers,
        }),
    ),
    latency: getOrCreate(
      registry,
      'fusillade_upstream_latency_seconds',
      () =>
        new Histogram({
          name: 'fusillade_upstream_latency_seconds',
          help: 'Duration of one HTTP attempt',
          labelNames: ['model', 'outcome'],
          buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
          registers,
        }),
    ),
    claimDuration: getOrCreate(
      registry,
      'fusillade_claim_duration_seconds',
      () =>
        new Histogram({
          name: 'fusillade_claim_duration_seconds',
          help: 'Duration of one claim statement (within the slot budget)',
          labelNames: ['daemon'],
          buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5],
          registers,
        }),
    ),
    queueDepth: getOrCreate(
      registry,
      'fusillade_queue_depth',
      () =>
        new Gauge({
          name: 'fusillade_queue_depth',
          help: 'Pending requests in live batches, per model (sampled periodically; set with inc after a reset, so models under one label add up)',
          labelNames: ['model'],
          registers,
        }),
    ),
    batchesAtRisk: getOrCreate(
      registry,
      'fusillade_batches_at_risk',
      () =>
        new Gauge({
          name: 'fusillade_batches_at_risk',
          help: 'Live batches that would miss their deadline at their current rate, raised in the claim (global: every daemon reports the same count; do not sum)',
          registers,
        }),
    ),
    rateLimit: getOrCreate(
      registry,
      'fusillade_model_rate_limit_per_minute',
      () =>
        new Gauge({
          name: 'fusillade_model_rate_limit_per_minute',
          help: "A model's requests (kind=requests) or tokens (kind=tokens) per minute in force, across all daemons",
          labelNames: ['model', 'kind'],
          registers,
        }),
    ),
    rateUsed: getOrCreate(
      registry,
      'fusillade_model_rate_used_per_minute',
      () =>
        new Gauge({
          name: 'fusillade_model_rate_used_per_minute',
          help: 'Requests or estimated tokens this daemon started in the last minute, per model',
          labelNames: ['daemon', 'model', 'kind'],
          registers,
        }),
    ),
    pausedUntil: getOrCreate(
      registry,
      'fusillade_model_paused_until_seconds',
      () =>
        new Gauge({
          name: 'fusillade_model_paused_until_seconds',
          help: 'Epoch seconds until which a model is paused after a 429 (0: not paused)',
          labelNames: ['model'],
          registers,
        }),
    ),
    adaptiveConcurrency: getOrCreate(
      registry,
      'fusillade_model_adaptive_concurrency',
      () =>
        new Gauge({
          name: 'fusillade_model_adaptive_concurrency',
          help: "This daemon's adaptive concurrency limit per model (AIMD)",
          labelNames: ['daemon', 'model'],
          registers,
        }),
    ),
  };
}

/** Sets the rate-limit gauges from a daemon's rate state (DaemonRateLimits.status(), src/daemon/rate-limits.ts). */
export function setRateGauges(
  metrics: DaemonMetrics,
  daemon: string,
  status: readonly ModelRateStatus[],
): void {
  for (const s of status) {
    // Settings and per-daemon rates of one model: summing them under the shared label means nothing.
    if (!metrics.names(s.model)) continue;
    if (s.rpm !== null) metrics.rateLimit.set({ model: s.model, kind: 'requests' }, s.rpm);
    if (s.tpm !== null) metrics.rateLimit.set({ model: s.model, kind: 'tokens' }, s.tpm);
    metrics.rateUsed.set({ daemon, model: s.model, kind: 'requests' }, s.requestsPerMinute);
    metrics.rateUsed.set({ daemon, model: s.model, kind: 'tokens' }, s.tokensPerMinute);
    metrics.pausedUntil.set({ model: s.model }, s.pausedUntil / 1000);
    if (s.adaptiveConcurrency !== null) {
      metrics.adaptiveConcurrency.set({ daemon, model: s.model }, s.adaptiveConcurrency);
    }
  }
}
