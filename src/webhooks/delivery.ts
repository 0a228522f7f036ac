import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type pg from 'pg';
import type { Counter, Registry } from 'prom-client';
import type { Agent } from 'undici';
import {
  claimDeliveriesSql,
  dropDeliverySql,
  releaseDeliveriesSql,
  settleDeliverySql,
} from '../db/sql/webhook-deliveries.js';
import type { DaemonConfig } from '../dispatch/config.js';
import { daemonLog, stderrLogger } from '../dispatch/logger.js';
import {
  DEFAULT_DISABLE_POLICY,
  type DisablePolicy,
  RETRY_SCHEDULE_MS,
  retryDelay,
  type WebhookEvent,
  type WebhookEventType,
} from '../domain/webhooks.js';
import { PrivateAddressError, publicOnlyLookup, refuseLiteralPrivate } from './address.js';
import { webhookEndpointId } from './endpoints.js';
import { webhookHeaders } from './signing.js';

/**
 * The webhook deliverer: a small loop of its own, next to a daemon (PostgresRequestManager.run()
 * starts one with every daemon), that sends the outbox's due deliveries (src/domain/webhooks.ts
 * states their lifecycle; src/db/sql/webhook-deliveries.ts the claim and its lease).
 *
 *   tick   claim up to `concurrency` due deliveries → POST each, signed (Standard Webhooks), with
 *          its own timeout → settle each (delivered; retry at the schedule's next delay; failed).
 *          A full claim ticks again at once; otherwise the next tick is pollIntervalMs away.
 *   stop   no new tick; attempts in flight are aborted and handed back (due at once, not counted).
 *
 * Receivers on private or loopback addresses are refused unless allowPrivate: the URL's literal
 * address before sending, and every address a name resolves to when the connection is made
 * (the connection's own lookup, so a DNS answer that changed since the endpoint was added, DNS
 * rebinding, is caught). Redirects are not followed (a 3xx is a failed attempt).
 */

export interface WebhookDeliveryOptions {
  /** Default true. */
  enabled?: boolean;
  /** Deliver to private and loopback addresses (`--allow-private-webhooks`); default false. */
  allowPrivate?: boolean;
  /** How often an idle deliverer looks for due deliveries; default 1000 ms. */
  pollIntervalMs?: number;
  /** One attempt, connection to answer; default 15 s. */
  attemptTimeoutMs?: number;
  /** Most deliveries in flight (and claimed at once); default 16. */
  concurrency?: number;
  /** Delays between attempts (default RETRY_SCHEDULE_MS: 5 s, 5 min, 30 min, 2 h, 5 h, 8 h, 8 h). */
  retryScheduleMs?: readonly number[];
  /** When a failing endpoint is disabled (default: 10 consecutive failures over at least an hour). */
  disable?: DisablePolicy;
}

export interface WebhookDelivererDeps {
  pool: pg.Pool;
  /** Quoted schema. */
  schema: string;
  log: {
    info(msg: string, fields?: Record<string, unknown>): void;
    warn(msg: string, fields?: Record<string, unknown>): void;
  };
  registry?: Registry;
}

interface ClaimedDelivery {
  id: string;
  event_id: string;
  event_type: WebhookEventType;
  batch_id: string;
  attempts: number;
  event_created_at: string;
  endpoint_id: string;
  url: string;
  secret: string;
  inactive: boolean;
}

/** The event body of a delivery: fixed by its row, so every attempt sends the same bytes. */
export function eventBody(
  d: Pick<ClaimedDelivery, 'event_id' | 'event_type' | 'batch_id' | 'event_created_at'>,
): string {
  const event: WebhookEvent = {
    object: 'event',
    id: d.event_id,
    type: d.event_type,
    created_at: Number(d.event_created_at),
    data: { id: `batch_${d.batch_id.replace(/-/g, '')}` },
  };
  return JSON.stringify(event);
}

/** What a receiver's error text may show: short, one line. */
function describe(err: unknown): string {
  if (err instanceof PrivateAddressError) return err.message;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.cause instanceof PrivateAddressError) return e.cause.message;
  const code = e?.code ?? e?.cause?.code;
  const message = (e?.message ?? String(err)).split('\n')[0]!.slice(0, 200);
  return code ? `${code}: ${message}` : message;
}

const LEASE_MARGIN_MS = 30_000;

/**
 * undici, loaded by the first delivery: every daemon starts a deliverer (`fusillade run` too),
 * and most never deliver. Loading it up front put its 110 files (130–170 ms of CPU, measured on
 * the 2-core machine) on `run`'s start-up, beside the daemon's own first claims (issue 10);
 * the daemon itself loads only undici's Pool (src/daemon/undici-pool.ts).
 */
const loadUndici = () => import('undici');
const require = createRequire(import.meta.url);

export class WebhookDeliverer {
  private readonly o: Required<Omit<WebhookDeliveryOptions, 'enabled'>>;
  /** The HTTP client, made on first use (loadUndici). */
  private client: Promise<{ agent: Agent; request: typeof import('undici').request }> | null = null;
  private readonly token = randomUUID();
  private readonly sql: { claim: string; settle: string; release: string; drop: string };
  /** On the registry given; without one nobody reads it, and prom-client is not loaded for it. */
  private readonly attemptsCounter: Pick<Counter<'outcome'>, 'inc'>;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private readonly inFlight = new Map<string, AbortController>();
  private stopped = false;

  constructor(
    private readonly deps: WebhookDelivererDeps,
    options: WebhookDeliveryOptions = {},
  ) {
    this.o = {
      allowPrivate: options.allowPrivate ?? false,
      pollIntervalMs: options.pollIntervalMs ?? 1000,
      attemptTimeoutMs: options.attemptTimeoutMs ?? 15_000,
      concurrency: Math.max(1, options.concurrency ?? 16),
      retryScheduleMs: options.retryScheduleMs ?? RETRY_SCHEDULE_MS,
      disable: options.disable ?? DEFAULT_DISABLE_POLICY,
    };
    const s = deps.schema;
    this.sql = {
      claim: claimDeliveriesSql(s),
      settle: settleDeliverySql(s),
      release: releaseDeliveriesSql(s),
      drop: dropDeliverySql(s),
    };
    const name = 'fusillade_webhook_attempts_total';
    const registry = deps.registry;
    this.attemptsCounter = registry
      ? ((registry.getSingleMetric(name) as Counter<'outcome'> | undefined) ??
        new (require('prom-client') as typeof import('prom-client')).Counter({
          name,
          help: 'Webhook delivery attempts, by outcome (delivered, failed)',
          labelNames: ['outcome'],
          registers: [registry],
        }))
      : { inc: () => {} };
  }

  private http(): Promise<{ agent: Agent; request: typeof import('undici').request }> {
    this.client ??= loadUndici().then(({ Agent, request }) => ({
      agent: new Agent({
        connect: {
          timeout: this.o.attemptTimeoutMs,
          ...(this.o.allowPrivate ? {} : { lookup: publicOnlyLookup }),
        },
        headersTimeout: this.o.attemptTimeoutMs,
        bodyTimeout: this.o.attemptTimeoutMs,
        keepAliveTimeout: 10_000,
      }),
      request,
    }));
    return this.client;
  }

  start(): void {
    this.schedule(0);
  }

  /** Stops ticking; aborts attempts in flight and hands them back. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const c of this.inFlight.values()) c.abort();
    await this.running?.catch(() => {});
    await this.client?.then(({ agent }) => agent.close()).catch(() => {});
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.tick()
        .then(
          (full) => this.schedule(full ? 0 : this.o.pollIntervalMs),
          (err) => {
            this.deps.log.warn('webhook delivery tick failed; retrying', { error: describe(err) });
            this.schedule(this.o.pollIntervalMs);
          },
        )
        .finally(() => {
          this.running = null;
        });
    }, ms);
    this.timer.unref?.();
  }

  /** One round; resolves true when the claim came back full (more may be due). */
  async tick(): Promise<boolean> {
    const { rows } = await this.deps.pool.query<ClaimedDelivery>(this.sql.claim, [
      this.token,
      this.o.concurrency,
      this.o.attemptTimeoutMs + LEASE_MARGIN_MS,
    ]);
    await Promise.all(rows.map((d) => this.deliver(d)));
    return rows.length >= this.o.concurrency;
  }

  private async deliver(d: ClaimedDelivery): Promise<void> {
    if (d.inactive) {
      await this.deps.pool.query(this.sql.drop, [d.id, this.token]);
      return;
    }
    if (this.stopped) {
      await this.deps.pool.query(this.sql.release, [this.token, [d.id]]).catch(() => {});
      return;
    }
    const body = eventBody(d);
    const controller = new AbortController();
    this.inFlight.set(d.id, controller);
    let status: number | null = null;
    let error: string | null = null;
    try {
      const url = new URL(d.url);
      if (!this.o.allowPrivate) refuseLiteralPrivate(url);
      const { agent, request } = await this.http();
      const timer = setTimeout(() => controller.abort(), this.o.attemptTimeoutMs);
      try {
        const res = await request(url, {
          method: 'POST',
          dispatcher: agent,
          headers: {
            'content-type': 'application/json',
            'user-agent': 'fusillade-webhooks',
            ...webhookHeaders(d.secret, d.event_id, body),
          },
          body,
          signal: controller.signal,
        });
        status = res.statusCode;
        await res.body.dump({ limit: 64 * 1024 }).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
      if (status < 200 || status >= 300) error = `receiver answered ${status}`;
    } catch (err) {
      error =
        controller.signal.aborted && !this.stopped ? 'the receiver did not answer in time' : describe(err);
    } finally {
      this.inFlight.delete(d.id);
    }
    if (this.stopped && error !== null && status === null) {
      // Cut short by stop(): not the receiver's failure.
      await this.deps.pool.query(this.sql.release, [this.token, [d.id]]).catch(() => {});
      return;
    }
    const ok = error === null;
    const delay = ok ? null : retryDelay(d.attempts, this.o.retryScheduleMs);
    const { rows } = await this.deps.pool.query<{ endpoint_id: string; disabled_now: boolean }>(
      this.sql.settle,
      [d.id, this.token, ok, status, error, delay, this.o.disable.failures, this.o.disable.minStreakMs],
    );
    this.attemptsCounter.inc({ outcome: ok ? 'delivered' : 'failed' });
    const fields = {
      event: d.event_id,
      type: d.event_type,
      endpoint: webhookEndpointId(d.endpoint_id),
      attempt: d.attempts,
    };
    if (ok) this.deps.log.info('webhook delivered', { ...fields, status });
    else
      this.deps.log.warn('webhook attempt failed', {
        ...fields,
        status,
        error,
        nextAttemptInMs: delay,
      });
    if (rows[0]?.disabled_now) {
      this.deps.log.warn('webhook endpoint disabled after repeated failures', { endpoint: fields.endpoint });
    }
  }
}

/** Starts a deliverer on the manager's database, logging like its daemon (config.logger). */
export function startWebhookDeliverer(
  manager: { pool: pg.Pool; schema: string },
  config: Pick<DaemonConfig, 'logger' | 'metricsRegistry'>,
  options: WebhookDeliveryOptions,
): WebhookDeliverer {
  const log = daemonLog(config.logger ?? stderrLogger('info'), { component: 'webhooks' });
  const deliverer = new WebhookDeliverer(
    {
      pool: manager.pool,
      schema: manager.schema,
      log,
      ...(config.metricsRegistry ? { registry: config.metricsRegistry } : {}),
    },
    options,
  );
  deliverer.start();
  return deliverer;
}
