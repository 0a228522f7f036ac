import { isConnectionError, query, withClient } from '../db/client.js';
import { ensureRoutes } from '../db/routes.js';
import { publishDaemonRoutesSql } from '../db/sql/batches/routes.js';
import { liveRoutesSql } from '../db/sql/queue/claim.js';
import { beginSql } from '../db/transaction.js';
import { errorFields } from '../dispatch/logger.js';
import { isUrlUpstream, type StoredRoute } from '../domain/upstream-route.js';
import type { Daemon } from './daemon.js';
import { setRateGauges } from './metrics.js';
import { PUBLISH_MS } from './rate-limits.js';

/**
 * The budget task: this daemon's share of each model's global limit (src/db/sql/queue/budget.ts), one
 * short transaction at a time, rarely: on demand changes, on every poke (poll, notification,
 * reclaim, a retry falling due), every budgetIntervalMs while the ledger holds or wants slots, and
 * soon after a finished attempt leaves the daemon above its fair share.
 *
 *   seed       When poked: the (model, route) pairs with live work that this daemon can send exactly
 *              as recorded (the others are left to daemons that can); the ledger's live models and
 *              the pipe's routes per model. Publishes the routes this daemon serves.
 *   rebalance  Locks the models' model_limits rows and recomputes this daemon's slots and target
 *              from the ledger's request (wanted, used). While it runs, the ledger sends no model
 *              above the `used` it reported (ledger.ts, frozen), so a slot granted to another daemon
 *              is never in use here; claims go on meanwhile (they only queue rows). A failure after
 *              its COMMIT went out (reply lost, deadline passed) may have committed lower slots: the
 *              ledger then stays held to `used` until a later rebalance's result.
 */
export class DaemonBudgets {
  private seedNeeded = true;
  /** Route ids published in this daemon's row (daemons.route_ids), as a sorted key. */
  private publishedRoutes = '';
  /** The stored routes of upstreams.declared() (which only grows). */
  private declaredRoutes: StoredRoute[] = [];
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private closed = false;
  /** The running rebalance has sent its COMMIT: should it fail now, its outcome is unknown. */
  private commitSent = false;

  constructor(private readonly d: Daemon) {}

  /** There may be new work: refresh the live models, then rebalance, at once. */
  poke(): void {
    this.seedNeeded = true;
    this.request(0);
  }

  /** Refresh the live models in `delayMs` (after a failed statement). */
  reseed(delayMs: number): void {
    this.seedNeeded = true;
    this.request(delayMs);
  }

  /** Runs the budget task in `delayMs` (sooner requests win; one task at a time). */
  request(delayMs: number): void {
    if (this.closed) return;
    if (this.running) {
      if (delayMs === 0) this.again = true;
      else if (!this.timer || Date.now() + delayMs < this.timerAt) this.arm(delayMs);
      return;
    }
    if (this.timer && Date.now() + delayMs >= this.timerAt) return;
    this.arm(delayMs);
  }

  /** No more rebalances; waits for the one running. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => {});
  }

  private arm(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = Date.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.start();
    }, delayMs);
  }

  private start(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    const d = this.d;
    const run = this.rebalance()
      .catch((err) => {
        d.pipe.ledger.rebalanceFailed(this.commitSent ? 'unknown' : false);
        d.log.warn('budget rebalance failed; retrying', errorFields(err));
        if (isConnectionError(err) || (err as Error).name === 'QueryTimeoutError') {
          d.maintenance.reclaimOrphansSoon();
        }
        this.seedNeeded = true;
        this.again = false;
        this.request(Math.min(5000, Math.max(100, d.config.budgetIntervalMs)));
      })
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.request(0);
        } else if (d.pipe.ledger.active) {
          this.request(d.config.budgetIntervalMs);
        } else if (d.rates.hasUnpublished) {
          this.request(PUBLISH_MS);
        }
        d.pipe.pump();
        d.pipe.kick();
      });
    this.running = run;
  }

  /** Seeds the live models if asked, then recomputes this daemon's budgets in one short transaction. */
  private async rebalance(): Promise<void> {
    const d = this.d;
    const ledger = d.pipe.ledger;
    this.commitSent = false;
    if (this.seedNeeded && !d.isStopping) {
      this.seedNeeded = false;
      await this.seed();
    }
    // Limits newly learned from the upstream's headers, before the transaction (rare).
    await d.rates.writeLearned(d.db);
    const request = ledger.budgetRequest();
    if (request.length === 0) {
      // Idle: the last sends' usage reaches the operations page even though no lease runs.
      if (d.rates.hasUnpublished) {
        await withClient(d.db, d.config.dbTimeoutMs, 'rate usage publish', (c) => d.rates.publish(c, d.id));
      }
      return;
    }
    const models = request.map((r) => r.model);
    const t = Math.max(1, d.config.dbTimeoutMs);
    let leased = false;
    const rows = await withClient(d.db, d.config.dbTimeoutMs, 'budget rebalance', async (c) => {
      try {
        // idle_in_transaction_session_timeout: a daemon frozen inside this transaction (SIGSTOP, a VM
        // or GC pause) cannot run its own deadlines; PostgreSQL then ends its session and frees the
        // model locks, or every other daemon's rebalance would wait on that model until it woke up.
        await c.query(beginSql({ timeoutMs: t, idleTimeoutMs: t }));
        await c.query({ ...d.sql.lock, values: [models] });
        const { rows } = await c.query<{
          model: string;
          slots: number;
          target: number;
          lim: number;
          peers: number;
          held: boolean;
        }>({
          ...d.sql.budget,
          values: [
            d.id,
            models,
            request.map((r) => r.wanted),
            request.map((r) => r.used),
            d.config.deadDaemonAfterMs,
          ],
        });
        // The rate budgets of the same models, under the same locks (rate-budget.ts).
        await d.rates.lease(c, models, this.rateDemand(rows), new Map(rows.map((r) => [r.model, r.peers])));
        leased = true;
        await d.rates.publish(c, d.id);
        // From here a failure may still have committed (ledger.rebalanceFailed).
        this.commitSent = true;
        await c.query('COMMIT');
        return rows;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        if (leased) d.rates.forgetGrants(models);
        throw err;
      }
    });
    d.pipe.claimedSinceRebalance.clear();
    ledger.applyBudgets(
      rows.map((r) => ({ model: r.model, slots: r.slots, target: r.target, limit: r.lim, peers: r.peers })),
    );
    // A row gone while requests of its model were in flight: another daemon's reclaim deleted it
    // (budget.ts rebalanceSql), this daemon was declared lost. Learnt here within a budget interval,
    // rather than at the next heartbeat.
    const used = new Map(request.map((r) => [r.model, r.used]));
    const gone = rows.filter((r) => !r.held && (used.get(r.model) ?? 0) > 0).map((r) => r.model);
    if (gone.length > 0) d.fenceAfterLost('its budgets were released to the others', { models: gone });
    for (const r of rows) {
      if (d.metrics.names(r.model)) d.metrics.limit.set({ model: r.model }, r.lim);
      d.rates.setConcurrencyLimit(r.model, r.lim);
    }
    // Gauges name configured models only (metricsModels): a tenant's model name stays out of /metrics.
    setRateGauges(
      d.metrics,
      d.id,
      d.rates.status().filter((r) => d.metrics.names(r.model)),
    );
  }

  /**
   * Rows of each model this daemon may start until its next rebalance, asked of the rate budgets:
   * its share of the slots, or twice what it claimed since the last rebalance when that is more (a
   * fast upstream turns each slot over many times an interval). Nothing for a model without work.
   */
  private rateDemand(rows: readonly { model: string; slots: number; target: number }[]): Map<string, number> {
    const d = this.d;
    const demand = new Map<string, number>();
    for (const r of rows) {
      if (!d.pipe.ledger.counts(r.model).hasWork || d.isStopping) demand.set(r.model, 0);
      else
        demand.set(
          r.model,
          Math.max(Math.min(r.slots, r.target), 2 * (d.pipe.claimedSinceRebalance.get(r.model) ?? 0)),
        );
    }
    return demand;
  }

  /** The live (model, route) pairs this daemon can send; publishes the routes it serves. */
  private async seed(): Promise<void> {
    const d = this.d;
    const { rows } = await query<{ model: string; route_id: number; upstream: string; credential: string }>(
      d.db,
      d.config.dbTimeoutMs,
      'live routes',
      liveRoutesSql(d.schema),
      [JSON.stringify(d.config.modelConcurrencyLimits), d.config.defaultModelConcurrency],
    );
    const live = new Map<string, number[]>();
    const served: StoredRoute[] = [];
    for (const r of rows) {
      const route = { id: r.route_id, upstream: r.upstream, credential: r.credential } as StoredRoute;
      if (!d.upstreams.resolve(route, r.model)) continue;
      served.push(route);
      const routes = live.get(r.model);
      if (routes) routes.push(r.route_id);
      else live.set(r.model, [r.route_id]);
    }
    d.pipe.routes = live;
    d.pipe.ledger.setLive(live.keys());
    await this.publishRoutes(served);
  }

  /**
   * Records in this daemon's row what it serves: the routes of its configuration plus `seen` (live
   * routes it resolved), and the credentials it sends to any URL upstream (src/db/sql/batches/upstreams.ts
   * reads them). Written at start and whenever the set changes.
   */
  async publishRoutes(seen: StoredRoute[]): Promise<void> {
    const d = this.d;
    const t = d.config.dbTimeoutMs;
    const specs = d.upstreams.declared();
    if (this.declaredRoutes.length !== specs.length) {
      this.declaredRoutes = await withClient(d.db, t, 'record routes', (c) =>
        ensureRoutes(c, d.schema, specs),
      );
    }
    const open = new Set<string>(d.upstreams.anyUpstreamCredentials);
    const ids = [
      ...new Set(
        [...this.declaredRoutes, ...seen]
          .filter((r) => !(open.has(r.credential) && isUrlUpstream(r.upstream)))
          .map((r) => r.id),
      ),
    ].sort((a, b) => a - b);
    const key = ids.join(',');
    if (key === this.publishedRoutes) return;
    await query(d.db, t, 'publish routes', publishDaemonRoutesSql(d.schema), [d.id, ids, [...open]]);
    this.publishedRoutes = key;
  }
}
