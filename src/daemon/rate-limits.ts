import type pg from 'pg';
import {
  configureRateLimitsSql,
  learnRateLimitsSql,
  leaseRatesSql,
  lockRatesSql,
  pauseModelSql,
  publishRateUsageSql,
} from '../db/sql/queue/rate-budget.js';
import type { ModelRateLimit } from '../domain/rate-wallet.js';
import { type LeaseGrant, RateLimitPolicy, type RateLimitSettings } from './rate-policy.js';

/**
 * The daemon's side of requests/tokens-per-minute limits (issue 11; design in
 * docs/decisions/rate-limits.md): the I/O shell over RateLimitPolicy (rate-policy.ts, the wallets,
 * learned limits, pauses, usage and adaptive concurrency, without I/O). Its statements: the
 * configured limits written at start, a pause for every daemon, learned limits, the lease inside
 * the slot rebalance's transaction (src/db/sql/queue/rate-budget.ts) and the usage published for
 * the dashboard. The daemon's shell calls it at four points: planning a claim (admissible,
 * reserve), after a claim (claimed), after every attempt (observe) and in every rebalance (lease).
 * A model with no limit configured, none learned and no pause costs a map lookup per claim and per
 * attempt, and one lock query a second while any model is rebalanced.
 */

export type { ModelRateLimit, ModelRateStatus, RateLimitSettings } from './rate-policy.js';
export { PUBLISH_MS } from './rate-policy.js';

export class DaemonRateLimits extends RateLimitPolicy {
  private readonly sql: Record<'lock' | 'lease' | 'pause' | 'configure' | 'learn' | 'publish', string>;

  constructor(
    schema: string,
    settings: RateLimitSettings,
    private readonly onError: (what: string, err: unknown) => void = () => {},
  ) {
    super(settings);
    this.sql = {
      lock: lockRatesSql(schema),
      lease: leaseRatesSql(schema),
      pause: pauseModelSql(schema),
      configure: configureRateLimitsSql(schema),
      learn: learnRateLimitsSql(schema),
      publish: publishRateUsageSql(schema),
    };
  }

  /** Writes the configured limits (daemon start; configuration is the latest word). */
  async configure(pool: pg.Pool | pg.PoolClient): Promise<void> {
    const entries = this.configuredEntries();
    if (entries.length === 0) return;
    await pool.query(this.sql.configure, [
      entries.map(([m]) => m),
      entries.map(([, r]) => r),
      entries.map(([, , t]) => t),
      this.settings.rateBurstSeconds,
    ]);
    this.markRated(entries.map(([model]) => model));
  }

  /** Changes one model's configured limits at run time (setModelRateLimits). */
  async setLimits(pool: pg.Pool, model: string, limits: ModelRateLimit): Promise<void> {
    const { rpm, tpm } = this.setConfigured(model, limits);
    await pool.query(this.sql.configure, [[model], [rpm], [tpm], this.settings.rateBurstSeconds]);
    this.markRated([model]);
  }

  /** Writes a pause for every daemon (one statement; call when observe returned a duration). */
  async pause(pool: pg.Pool, model: string, ms: number): Promise<void> {
    try {
      const { rows } = await pool.query<{ paused_until_ms: number }>(this.sql.pause, [model, ms]);
      this.paused(model, rows[0]?.paused_until_ms ?? 0);
    } catch (err) {
      this.onError('rate-limit pause', err);
    }
  }

  /** Writes newly learned limits (outside the rebalance's transaction; rare). */
  async writeLearned(pool: pg.Pool | pg.PoolClient): Promise<void> {
    const models = this.learnedToWrite();
    if (models.length === 0) return;
    await pool.query(this.sql.learn, this.learnedParams(models));
    this.markWritten(models);
  }

  /**
   * Inside the slot rebalance's transaction (after the model_limits locks): locks the rate rows of
   * these models, returns every wallet and takes the grants. `rows` is what the daemon may start of
   * each model until its next rebalance; `peers` the other daemons with demand (budget.ts).
   */
  async lease(
    client: pg.PoolClient,
    models: readonly string[],
    rows: ReadonlyMap<string, number>,
    peers: ReadonlyMap<string, number>,
    now: number = Date.now(),
  ): Promise<void> {
    const plan = this.leaseModels(models, now);
    if (!plan) return;
    const locked = await client.query<{ model: string }>(this.sql.lock, [plan.sorted]);
    if (!plan.anyRated) this.discovered(now);
    if (locked.rows.length === 0) return;
    const names = locked.rows.map((r) => r.model);
    const asks = this.leaseAsks(names, rows, peers);
    let result: pg.QueryResult<LeaseGrant>;
    try {
      result = await client.query(this.sql.lease, [
        names,
        asks.map((a) => a.back.requests),
        asks.map((a) => a.back.tokens),
        asks.map((a) => a.want.requests),
        asks.map((a) => a.want.tokens),
        asks.map((a) => a.peers),
        this.settings.rateBurstSeconds,
        asks.map((a) => a.obs?.requests ?? null),
        asks.map((a) => a.obs?.tokens ?? null),
        asks.map((a) => a.obs?.at ?? null),
      ]);
    } catch (err) {
      // The transaction rolls back: the wallets were not returned, so they are ours again.
      this.restoreAsks(names, asks);
      throw err;
    }
    this.applyGrants(result.rows, now);
  }

  /**
   * Inside the slot rebalance's transaction, at most once a second: this daemon's usage in the last
   * minute and adaptive concurrency of every model with rate state, for the dashboard (migration 0014).
   */
  async publish(client: pg.PoolClient, daemonId: string, now: number = Date.now()): Promise<void> {
    const rows = this.publishRows(now);
    if (!rows || rows.length === 0) return;
    await client.query(this.sql.publish, [
      daemonId,
      rows.map((r) => r.model),
      rows.map((r) => r.requestsPerMinute),
      rows.map((r) => Math.round(r.tokensPerMinute)),
      rows.map((r) =>
        r.adaptiveConcurrency === null ? null : Math.max(1, Math.round(r.adaptiveConcurrency)),
      ),
    ]);
  }
}
