import type { Limiter, UpstreamClient } from '../dispatch/interfaces.js';
import { type DaemonLog, errorFields } from '../dispatch/logger.js';
import { addUpstreamAuth } from '../domain/message-batch.js';
import { redactKeys } from '../domain/redact-keys.js';
import type { BackoffPolicy, RetryRules } from '../domain/retry.js';
import { isJsonContentType } from '../domain/templates.js';
import type { DaemonMetrics } from './metrics.js';
import type { DaemonRateLimits } from './rate-limits.js';
import { type AbortReason, type ResultWrite, settleAttempt } from './settle.js';
import type { TemplateKeys } from './template-keys.js';
import { splitBaseUrl, UndiciAttempt, UndiciUpstreamClient } from './upstream-client.js';
import type { DaemonUpstreams } from './upstreams.js';

/** setTimeout's ceiling (~24.8 days); a later deadline is caught by the poll. */
const MAX_TIMER_MS = 2_147_483_647;

/** A row as the claim returns it. */
export interface ClaimedRow {
  id: string;
  batch_id: string;
  model: string;
  /** The request's route (upstream_routes.id): where it goes and with which key. */
  route_id: number;
  attempt: number;
  /** The batch's deadline, epoch ms (a float8 from the claim: cheaper to parse than a timestamptz); null for none. */
  expires_ms: number | null;
  custom_id: string | null;
  method: string;
  path: string;
  body: string;
  api_key: string;
  /** The template's Content-Type; null: application/json. */
  content_type: string | null;
}

interface InFlight {
  row: ClaimedRow;
  /** Aborts the attempt: an AbortController for any client, the UndiciAttempt itself for the default one. */
  controller: { abort(): void };
  startedAt: number;
  /** startedAt + requestTimeoutMs: when the shared timeout timer aborts it. */
  timeoutAt: number;
  aborted: AbortReason | null;
  /** The key this attempt sends ('' for none): redacted from its answer with the configured ones. */
  apiKey: string;
}

export interface DispatcherOptions {
  daemonId: string;
  upstream: UpstreamClient;
  /** Where each claimed route's requests go (the claim takes only routes it resolved). */
  upstreams: DaemonUpstreams;
  /** Opens a row's own key when it is stored sealed. */
  keys: TemplateKeys;
  limiter: Limiter;
  policy: BackoffPolicy & RetryRules;
  requestTimeoutMs: number;
  metrics: DaemonMetrics;
  log: DaemonLog;
  /** Receives every attempt's row write, and how long the attempt took (ms). */
  onResult(write: ResultWrite, latencyMs: number): void;
  /**
   * Requests/tokens-per-minute state (src/daemon/rate-limits.ts): whether a model is paced (its 429s
   * cost no retry) and what every attempt's headers say. `observe` returns a pause to write for
   * every daemon (ms), handed to onPause.
   */
  rates?: Pick<DaemonRateLimits, 'paced' | 'observe'>;
  onPause?(model: string, ms: number): void;
}

/**
 * Sends claimed rows upstream and turns each attempt into a row write. Holds the in-flight set, so
 * it can abort a batch's requests (cancel, deadline) or everything (shutdown).
 */
export class Dispatcher {
  private readonly inFlight = new Map<string, InFlight>();
  private readonly byModel = new Map<string, number>();
  private readonly byBatch = new Map<
    string,
    { count: number; expiresAt: number; timer: NodeJS.Timeout | null }
  >();
  private readonly metricsByModel = new Map<
    string,
    {
      inFlight: ReturnType<DaemonMetrics['inFlight']['labels']>;
      dispatched: ReturnType<DaemonMetrics['dispatched']['labels']>;
      latency(outcome: string): ReturnType<DaemonMetrics['latency']['labels']>;
    }
  >();
  private readonly bases = new Map<string, { origin: string; prefix: string } | null>();
  /**
   * One timer for every attempt's timeout instead of a setTimeout each (creating, inserting and
   * clearing a timer per request showed ≈4.5 µs a request in a CPU profile). Every attempt has the same
   * timeout, so inFlight (a Map, in insertion order) is also in timeout order: the timer is armed for
   * the oldest attempt's timeout and, when it fires, aborts from the front until the first attempt
   * not yet due. Timeouts fire exactly as before.
   */
  private timeoutTimer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];

  /** Logs a throwing shouldRetry hook (the attempt is then settled by the status rules). */
  private readonly hookError = (err: unknown) => this.o.log.warn('shouldRetry threw', errorFields(err));

  constructor(private readonly o: DispatcherOptions) {}

  get size(): number {
    return this.inFlight.size;
  }

  modelInFlight(model: string): number {
    return this.byModel.get(model) ?? 0;
  }

  batchInFlight(batchId: string): number {
    return this.byBatch.get(batchId)?.count ?? 0;
  }

  batchIds(): string[] {
    return [...this.byBatch.keys()];
  }

  ids(): string[] {
    return [...this.inFlight.keys()];
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Labelled metric children per model, looked up once (resolving labels per call hashed them twice
   * for every request).
   */
  private modelMetrics(name: string) {
    // Keyed by label: the models outside the named ones share one entry (bounded).
    const model = this.o.metrics.model(name);
    let m = this.metricsByModel.get(model);
    if (!m) {
      const byOutcome = new Map<string, ReturnType<DaemonMetrics['latency']['labels']>>();
      const latency = this.o.metrics.latency;
      m = {
        inFlight: this.o.metrics.inFlight.labels({ daemon: this.o.daemonId, model }),
        dispatched: this.o.metrics.dispatched.labels({ model }),
        latency: (outcome: string) => {
          let h = byOutcome.get(outcome);
          if (!h) {
            h = latency.labels({ model, outcome });
            byOutcome.set(outcome, h);
          }
          return h;
        },
      };
      this.metricsByModel.set(model, m);
    }
    return m;
  }

  private base(url: string): { origin: string; prefix: string } | null {
    let b = this.bases.get(url);
    if (b === undefined) {
      try {
        b = splitBaseUrl(url);
      } catch {
        b = null;
      }
      this.bases.set(url, b);
    }
    return b;
  }

  dispatch(row: ClaimedRow): void {
    const target = this.o.upstreams.target(row.route_id, row.model);
    let apiKey = '';
    let keyProblem: string | null = null;
    if (target?.apiKey != null) apiKey = target.apiKey;
    else if (target) {
      try {
        apiKey = this.o.keys.open(row.api_key);
      } catch (err) {
        keyProblem = (err as Error).message;
      }
    }
    const base = target ? this.base(target.url) : null;
    const fast = this.o.upstream instanceof UndiciUpstreamClient ? this.o.upstream : null;
    const controller = fast ? new UndiciAttempt() : new AbortController();
    const startedAt = Date.now();
    const entry: InFlight = {
      row,
      controller,
      startedAt,
      timeoutAt: startedAt + this.o.requestTimeoutMs,
      aborted: null,
      apiKey,
    };
    this.inFlight.set(row.id, entry);
    if (this.timeoutTimer === null) this.armTimeouts(this.o.requestTimeoutMs);
    this.byModel.set(row.model, (this.byModel.get(row.model) ?? 0) + 1);
    const batch = this.byBatch.get(row.batch_id);
    if (batch) batch.count++;
    else {
      // Abort at the deadline itself rather than at the next poll: the batch can end on time. A
      // batch without a deadline needs no timer.
      const expiresAt = row.expires_ms ?? Number.POSITIVE_INFINITY;
      const timer =
        row.expires_ms === null
          ? null
          : setTimeout(
              () => Date.now() >= expiresAt && this.abortBatches([row.batch_id], 'expired'),
              Math.min(Math.max(0, expiresAt - Date.now()), MAX_TIMER_MS),
            );
      timer?.unref();
      this.byBatch.set(row.batch_id, { count: 1, expiresAt, timer });
    }
    const m = this.modelMetrics(row.model);
    m.inFlight.inc();
    m.dispatched.inc();

    if (!target) {
      // Cannot happen: the claim takes only routes this daemon resolved. Hand the row back untouched.
      entry.aborted = 'shutdown';
      queueMicrotask(() => this.finish(entry, { kind: 'error', code: 'no_route', message: 'unrouted' }));
      return;
    }
    if (keyProblem !== null) {
      // Sealed by this daemon's secret (else it would not have claimed it), yet it does not open:
      // altered in the table. Final: no retry can fix it.
      const message = `the template's upstream key could not be opened: ${keyProblem}`;
      queueMicrotask(() => this.finish(entry, { kind: 'error', code: 'key_decryption_failed', message }));
      return;
    }
    if (base === null) {
      queueMicrotask(() =>
        this.finish(entry, {
          kind: 'error',
          code: 'invalid_endpoint',
          message: `the upstream endpoint is not a valid URL`,
        }),
      );
      return;
    }
    const headers: Record<string, string> = {
      'content-type': row.content_type ?? 'application/json',
      'x-fusillade-request-id': row.id,
    };
    if (row.custom_id !== null) headers['x-fusillade-custom-id'] = row.custom_id;
    addUpstreamAuth(headers, row.path, apiKey);
    const request = {
      origin: base.origin,
      path: base.prefix + row.path,
      method: row.method,
      headers,
      body: row.body,
    };
    const sent =
      fast && controller instanceof UndiciAttempt
        ? fast.start(request, controller)
        : this.o.upstream.send(request, (controller as AbortController).signal);
    sent.then(
      (outcome) => this.finish(entry, outcome),
      (err: unknown) => this.finish(entry, { kind: 'error', code: 'connection_error', message: String(err) }),
    );
  }

  private armTimeouts(delayMs: number): void {
    this.timeoutTimer = setTimeout(() => this.sweepTimeouts(), Math.min(Math.max(1, delayMs), MAX_TIMER_MS));
  }

  /** Aborts the attempts whose timeout has come (the oldest first), then re-arms for the next. */
  private sweepTimeouts(): void {
    this.timeoutTimer = null;
    const now = Date.now();
    for (const entry of this.inFlight.values()) {
      if (entry.timeoutAt > now) {
        this.armTimeouts(entry.timeoutAt - now);
        return;
      }
      this.abortEntry(entry, 'timeout');
    }
  }

  private abortEntry(entry: InFlight, reason: AbortReason): void {
    if (entry.aborted !== null || !this.inFlight.has(entry.row.id)) return;
    entry.aborted = reason;
    entry.controller.abort();
  }

  /** Aborts the in-flight requests of these batches; returns how many. */
  abortBatches(batchIds: Iterable<string>, reason: 'cancelled' | 'expired'): number {
    const set = new Set(batchIds);
    let n = 0;
    for (const entry of this.inFlight.values()) {
      if (set.has(entry.row.batch_id) && entry.aborted === null) {
        this.abortEntry(entry, reason);
        n++;
      }
    }
    return n;
  }

  /** Aborts requests of batches whose deadline has passed. */
  abortExpired(now: number = Date.now()): number {
    const expired = [...this.byBatch].filter(([, b]) => b.expiresAt <= now).map(([id]) => id);
    return expired.length > 0 ? this.abortBatches(expired, 'expired') : 0;
  }

  abortAll(reason: 'shutdown'): void {
    for (const entry of this.inFlight.values()) this.abortEntry(entry, reason);
  }

  private finish(entry: InFlight, outcome: import('../domain/retry.js').AttemptOutcome): void {
    const { row } = entry;
    if (this.inFlight.get(row.id) !== entry) return;
    this.inFlight.delete(row.id);
    if (this.inFlight.size === 0 && this.timeoutTimer !== null) {
      clearTimeout(this.timeoutTimer);
      this.timeoutTimer = null;
    }
    const m = (this.byModel.get(row.model) ?? 1) - 1;
    if (m === 0) this.byModel.delete(row.model);
    else this.byModel.set(row.model, m);
    const batch = this.byBatch.get(row.batch_id);
    if (batch && --batch.count === 0) {
      if (batch.timer !== null) clearTimeout(batch.timer);
      this.byBatch.delete(row.batch_id);
    }
    this.modelMetrics(row.model).inFlight.dec();

    const latencyMs = Date.now() - entry.startedAt;
    const rates = this.o.rates;
    if (rates) {
      const pause = rates.observe(row.model, outcome, entry.aborted === 'timeout', m + 1, latencyMs);
      if (pause !== null) this.o.onPause?.(row.model, pause);
    }
    const write = settleAttempt(
      {
        id: row.id,
        batchId: row.batch_id,
        model: row.model,
        attempt: row.attempt,
        deadline: row.expires_ms ?? Number.POSITIVE_INFINITY,
        customId: row.custom_id,
        anyBody: row.content_type !== null && !isJsonContentType(row.content_type),
        onHookError: this.hookError,
        paced: rates?.paced(row.model) === true,
      },
      outcome,
      entry.aborted,
      this.o.policy,
    );
    // Before the answer is stored (and served in the error or output file): no upstream key in it.
    const keys = [entry.apiKey, ...this.o.upstreams.keys()];
    write.body = redactKeys(write.body, keys);
    write.errorMessage = redactKeys(write.errorMessage, keys);
    const throttled = outcome.kind === 'http' && (outcome.status === 429 || outcome.status === 529);
    try {
      this.o.limiter.onOutcome(row.model, { throttled, latencyMs });
    } catch (err) {
      // A faulty limiter must not lose the attempt's write nor crash the process (this runs in a
      // promise callback: a throw would be an unhandled rejection).
      this.o.log.warn('limiter.onOutcome threw', { model: row.model, ...errorFields(err) });
    }
    this.modelMetrics(row.model)
      .latency(write.state)
      .observe(latencyMs / 1000);
    if (write.state === 'pending' && !write.giveBack) {
      this.o.metrics.retried.inc({
        model: this.o.metrics.model(row.model),
        reason: write.reason ?? 'unknown',
      });
    }
    this.o.onResult(write, latencyMs);
    if (this.inFlight.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
