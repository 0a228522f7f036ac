import type pg from 'pg';
import { type Abandon, isConnectionError, withClient } from '../db/client.js';
import { inTransaction } from '../db/transaction.js';
import { leaseMs, sendWindowMs } from '../dispatch/config.js';
import { errorFields } from '../dispatch/logger.js';
import type { Daemon } from './daemon.js';
import type { ClaimedRow } from './dispatcher.js';
import { type FlushPolicy, FlushScheduler, systemClock } from './flush-scheduler.js';
import { type ClaimEntry, type Hooks, SlotLedger } from './ledger.js';
import { handBackWrite, type ResultWrite } from './settle.js';

/**
 * The dispatch pipe: the daemon's hot path, wiring the slot ledger (ledger.ts, pure) and the flush
 * scheduler (flush-scheduler.ts, pure) to the claim and write statements and to the dispatcher.
 *
 *   claim     The scheduler starts a claim whenever the ledger plans one (free slots plus `ahead`
 *             rows not yet held). One autocommit statement (claim.ts) marks the rows 'processing'
 *             for this daemon: durable before any of them is sent, so a crash loses none (reclaim
 *             hands them back) and a stale daemon's later writes are refused (complete.ts guards).
 *             The rows join the ledger's local queue.
 *   pump      Whenever a slot may be free (a claim came back, an attempt finished, budgets changed),
 *             the ledger hands out queued rows below each model's share and the dispatcher sends
 *             them: a freed slot is refilled at once, with no round trip in between.
 *   write     Every finished attempt's row write waits in memory (its slot is already free) and goes
 *             out in batches (complete.ts) when the scheduler says: writeBatch waiting or the oldest
 *             waited writeDelayMs.
 *   give back Queued rows never sent (stop, cancel, deadline) go back to pending as hand-backs (the
 *             attempt is not counted) in the same batched writes; a pending row of a cancelled or
 *             expired batch reads as canceled (request_view).
 */

/** Most row writes one write statement carries. */
const MAX_FLUSH = 2000;
/**
 * Most response-body characters one write statement carries (at least one write), and the size
 * from which a body goes in a statement of its own, as a text parameter of its own rather than
 * inside the writes' JSON. Four 30 MB answers written together made a 120 MB JSON parameter:
 * JSON.stringify, then pg's byteLength and write of that fresh string, held the event loop ≈ 7 s on
 * a loaded 2-core machine (the API answered 503 meanwhile) and each step copied the bodies again.
 * Alone and as its own parameter, a body is not re-encoded: pg writes the decoded string once.
 */
const MAX_FLUSH_BODY_CHARS = 4 * 1024 * 1024;
const LARGE_BODY_CHARS = 1024 * 1024;
/** After a finished attempt leaves a daemon above its fair share, give the slot back this soon. */
export const GIVE_BACK_DELAY_MS = 10;

/**
 * When statements start (flush-scheduler.ts). Claims are few and large now that rows are held ahead
 * of need; writes are off the critical path and wait to share a statement.
 *
 * Measured (bench/cli-run.ts, 3 alternating rounds, medians, mock and raw undici in processes of
 * their own) on the shared 2-core machine while seven other engineers ran tests: raw undici itself
 * took 4× its idle time (10.2 s for the 20k job against 2.2 s idle), so these are not comparable with
 * the idle figures of issue 10 and the policy's values are not tuned yet. 20,000 × 0 ms, 64 in
 * flight: 47.9 s against raw 10.2 s (0.21 of raw's rate; CPU per request 325 µs in the process,
 * 375 µs in PostgreSQL). 2,000 × 100 ms, 100 in flight: 13.7 s against 7.3 s (1.88×). 6,000 × 1 s,
 * 1,000 in flight: 19.5 s against 28.0 s (0.70×; raw's own runs spread 27.7–46.1 s).
 * One write at a time gathering up to 256 outcomes or 8 ms (fill-driven) against these values, 20k ×
 * 0 ms, 3 alternating rounds at load 9–20: 385–392 write statements a run against 475–602, the
 * same buffer hits (≈ 427,000), PostgreSQL CPU 438–467 against 286–587 µs a request and 48.3 s
 * against 37.4 s (medians; raw 11.6 s): no gain seen, so not taken.
 */
export function flushPolicy(maxDbWriters: number): FlushPolicy {
  const depth = Math.max(1, Math.min(2, maxDbWriters));
  return { maxClaims: depth, maxWrites: depth, writeBatch: 64, writeDelayMs: 4 };
}

/** A claimed row in the ledger's queue. */
interface Held {
  id: string;
  batchId: string;
  model: string;
  expiresMs: number | null;
  sendByMs: number | null;
  row: ClaimedRow;
}

export class DispatchPipe {
  readonly ledger: SlotLedger<Held>;
  private readonly scheduler: FlushScheduler;
  /** Routes per model this daemon claims (the budget task's seed). */
  routes = new Map<string, number[]>();
  private results: ResultWrite[] = [];
  private oldestWaitingAt = 0;
  private claimsRunning = 0;
  /** Claims given up on at their deadline whose outcome is not back yet (statement()). */
  private claimsAbandoned = 0;
  private writesRunning = 0;
  /** Writes a running statement carries (still ours until written). */
  private readonly writing = new Set<ResultWrite[]>();
  private readonly running = new Set<Promise<void>>();
  /** Rows claimed per model since the last rebalance: the rate at which it starts them (rate limits). */
  readonly claimedSinceRebalance = new Map<string, number>();
  /** Claims started so far: the next claim's number (its start order). */
  private claimSeq = 0;
  /**
   * Batches this daemon learned were cancelled or past their deadline while claims ran, with the
   * number the next claim had then. A claim started earlier may have read the batch as live in its
   * snapshot and return rows of it after the batch's in-flight attempts were aborted: sent, they
   * would stand on the slots those aborts just freed while the upstream still counts the aborted
   * requests (it sees their connections close a moment later). Such rows go straight back. A claim
   * started later cannot return any: the cancel had committed before its notification, or the poll
   * that found it, reached this daemon. Cleared whenever no claim runs.
   */
  private readonly closedBatches = new Map<string, number>();
  /** withoutClaims() callers: no claim starts while any waits or runs. */
  private claimsBarred = 0;
  private claimsIdle: (() => void)[] = [];
  private kickQueued = false;
  private stopping = false;
  private closed = false;

  constructor(
    private readonly d: Daemon,
    hooks: Hooks,
  ) {
    const c = d.config;
    this.ledger = new SlotLedger<Held>({ maxClaim: c.claimBatchSize, hooks });
    this.scheduler = new FlushScheduler(
      flushPolicy(c.maxDbWriters),
      systemClock,
      () => ({
        claimsRunning: this.claimsRunning,
        writesRunning: this.writesRunning,
        writesWaiting: this.results.length,
        oldestWaitingAt: this.oldestWaitingAt,
        claimWanted: !this.stopping && this.claimsBarred === 0 && this.ledger.wantsClaim(Date.now()),
        stopping: this.stopping,
      }),
      (what) => (what === 'claim' ? this.startClaim() : this.startWrite()),
    );
  }

  /** An attempt is over (the dispatcher's onResult): its slot is free now; refill it, queue its write. */
  onResult(write: ResultWrite, latencyMs = 0): void {
    this.queueWrite(write);
    if (this.ledger.finished(write.model, latencyMs)) this.d.budgets.request(GIVE_BACK_DELAY_MS);
    this.pump();
    this.kick();
  }

  /** Sends what the ledger allows now; hands back rows past their deadline. */
  pump(): void {
    if (this.stopping) return;
    const { send, expired } = this.ledger.take(Date.now());
    for (const h of send) this.d.dispatcher.dispatch(h.row);
    if (expired.length > 0) this.handBack(expired);
  }

  /** Decide soon (coalesced: many finished attempts in one turn make one decision). */
  kick(): void {
    if (this.kickQueued || this.closed) return;
    this.kickQueued = true;
    setImmediate(() => {
      this.kickQueued = false;
      if (!this.closed) this.scheduler.kick();
    });
  }

  /** Hands back the queued rows of these batches (cancelled or past their deadline); returns how many. */
  release(batchIds: Iterable<string>): number {
    const batches = new Set(batchIds);
    if (this.claimsRunning > 0) for (const b of batches) this.closedBatches.set(b, this.claimSeq);
    const rows = this.ledger.release(batches);
    if (rows.length > 0) this.handBack(rows);
    return rows.length;
  }

  /** Hands back every queued row (stop, or the daemon was declared lost); returns how many. */
  releaseAll(): number {
    const rows = this.ledger.release('all');
    if (rows.length > 0) this.handBack(rows);
    return rows.length;
  }

  /** Batches of the rows queued here. */
  queuedBatchIds(): string[] {
    return this.ledger.queuedBatchIds();
  }

  /** Ids this daemon holds that are not in flight: queued, or awaiting their write. */
  heldIds(): string[] {
    const writing = [...this.writing].flatMap((batch) => batch.map((w) => w.id));
    return [...this.ledger.queuedIds(), ...this.results.map((w) => w.id), ...writing];
  }

  get unwritten(): number {
    return this.results.length;
  }

  /** No more claims or sends; the queue goes back at once (hand-backs, written by drain()). */
  stop(): void {
    this.stopping = true;
    this.ledger.stop();
    this.releaseAll();
  }

  /** Writes what is left (after stop() and once nothing is in flight), within `deadline` (epoch ms). */
  async drain(deadline: number): Promise<void> {
    while ((this.results.length > 0 || this.running.size > 0) && Date.now() < deadline) {
      this.scheduler.kick();
      const pending = [...this.running];
      await Promise.race([
        pending.length > 0 ? Promise.allSettled(pending) : new Promise((r) => setTimeout(r, 50)),
        new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now()))),
      ]);
    }
    this.closed = true;
    this.scheduler.stop();
  }

  /**
   * Runs `fn` while no claim runs (waiting for those running to end, and for those given up on at
   * their deadline to come back with their outcome, starting none meanwhile): the orphan reclaim
   * hands back this daemon's rows that it does not hold in memory, and a claim committing during it
   * would hold rows it has not returned yet.
   */
  async withoutClaims<T>(fn: () => Promise<T>): Promise<T> {
    this.claimsBarred++;
    try {
      while (this.claimsRunning > 0 || this.claimsAbandoned > 0)
        await new Promise<void>((resolve) => this.claimsIdle.push(resolve));
      return await fn();
    } finally {
      this.claimsBarred--;
      this.kick();
    }
  }

  private queueWrite(write: ResultWrite): void {
    if (this.results.length === 0) this.oldestWaitingAt = Date.now();
    this.results.push(write);
  }

  /** Rows never sent go back to pending, the attempt the claim counted undone. */
  private handBack(rows: Held[]): void {
    for (const h of rows) {
      const { row } = h;
      const input = {
        id: row.id,
        batchId: row.batch_id,
        model: row.model,
        attempt: row.attempt,
        deadline: 0,
      };
      this.queueWrite(handBackWrite(input));
    }
    this.kick();
  }

  private track(run: Promise<void>): void {
    const p = run.finally(() => {
      this.running.delete(p);
      this.kick();
    });
    this.running.add(p);
  }

  // ---- claim -----------------------------------------------------------------------------------

  private startClaim(): void {
    const now = Date.now();
    const plan = this.ledger.planClaim(now);
    // Reserved from each model's rate wallet until the rows' estimated costs replace it (0: not limited).
    const units = plan.map((e) => this.d.rates.reserve(e.model, e.cap));
    this.claimsRunning++;
    this.track(this.runClaim(plan, units, now, this.claimSeq++));
  }

  private async runClaim(plan: ClaimEntry[], units: number[], startedAt: number, seq: number): Promise<void> {
    let rows: ClaimedRow[] = [];
    let ok = false;
    try {
      if (plan.length > 0) rows = await this.claim(plan, startedAt);
      ok = true;
      this.scheduler.succeeded();
      const ms = Date.now() - startedAt;
      this.ledger.observeClaimLatency(ms);
      this.d.metrics.claimDuration.observe({ daemon: this.d.id }, ms / 1000);
    } catch (err) {
      this.failed('claim', err);
    } finally {
      this.claimsRunning--;
      this.claimEnded();
    }
    const window = sendWindowMs(this.d.config);
    const sendByMs = window === null ? null : startedAt + window;
    const held = rows.map((row) => ({
      id: row.id,
      batchId: row.batch_id,
      model: row.model,
      expiresMs: row.expires_ms,
      sendByMs,
      row,
    }));
    for (let i = 0; i < plan.length; i++) {
      const model = plan[i]!.model;
      const got = rows.filter((r) => r.model === model);
      this.d.rates.claimed(model, plan[i]!.cap, units[i]!, got);
      this.claimedSinceRebalance.set(model, (this.claimedSinceRebalance.get(model) ?? 0) + got.length);
    }
    const dry = this.ledger.claimed(plan, held, ok);
    if (this.closedBatches.size > 0) {
      const closed = rows.filter((r) => (this.closedBatches.get(r.batch_id) ?? -1) > seq);
      if (closed.length > 0) this.handBack(this.ledger.release(new Set(closed.map((r) => r.batch_id))));
      if (this.claimsRunning === 0) this.closedBatches.clear();
    }
    for (const b of this.ledger.finalizeDue(dry))
      if (this.d.dispatcher.batchInFlight(b) === 0) this.d.maintenance.finalizeSoon(b);
    if (this.stopping) {
      // Claimed while stopping: straight back.
      this.releaseAll();
    }
    this.pump();
    // A model run dry while this daemon holds more slots than it uses: give them back soon.
    for (const model of dry) {
      const b = this.ledger.budget(model);
      if (b && b.peers > 0 && b.slots > this.ledger.counts(model).inFlight) {
        this.d.budgets.request(GIVE_BACK_DELAY_MS);
        break;
      }
    }
  }

  private async claim(plan: ClaimEntry[], now: number): Promise<ClaimedRow[]> {
    const q: pg.QueryConfig = {
      ...this.d.sql.claim,
      values: [
        plan.map((e) => e.model),
        plan.map((e) => e.cap),
        plan.map((e) => this.ledger.claimHeld(e, now)),
        this.d.id,
        leaseMs(this.d.config),
        plan.map((e) => `{${(this.routes.get(e.model) ?? []).join(',')}}`),
      ],
    };
    return (await this.statement(q, true)) as ClaimedRow[];
  }

  // ---- write -----------------------------------------------------------------------------------

  private startWrite(): void {
    const writes = this.takeWrites();
    if (this.results.length > 0) this.oldestWaitingAt = Date.now();
    this.writesRunning++;
    this.writing.add(writes);
    this.track(this.runWrite(writes));
  }

  private async runWrite(writes: ResultWrite[]): Promise<void> {
    try {
      const stale = (await this.statement(this.completeQuery(writes))) as { id: string }[];
      this.scheduler.succeeded();
      this.d.afterWrite(writes, new Set(stale.map((r) => r.id)));
    } catch (err) {
      if (this.results.length === 0) this.oldestWaitingAt = Date.now();
      this.results.unshift(...writes);
      this.failed('write', err);
    } finally {
      this.writing.delete(writes);
      this.writesRunning--;
    }
  }

  /**
   * The next writes for one statement: up to MAX_FLUSH of them and MAX_FLUSH_BODY_CHARS of bodies;
   * a body of LARGE_BODY_CHARS or more alone (completeQuery).
   */
  private takeWrites(): ResultWrite[] {
    const results = this.results;
    if ((results[0]?.body?.length ?? 0) >= LARGE_BODY_CHARS) return results.splice(0, 1);
    const most = Math.min(results.length, MAX_FLUSH);
    let n = 0;
    for (let chars = 0; n < most && chars < MAX_FLUSH_BODY_CHARS; n++) {
      const length = results[n]!.body?.length ?? 0;
      if (length >= LARGE_BODY_CHARS) break;
      chars += length;
    }
    return results.splice(0, n);
  }

  /**
   * complete.ts's parameters: the daemon id, the writes as JSON (extra keys are ignored) and the
   * body of a lone large write (takeWrites), which its JSON then leaves out.
   */
  private completeQuery(writes: ResultWrite[]): pg.QueryConfig {
    const large = writes.length === 1 && (writes[0]!.body?.length ?? 0) >= LARGE_BODY_CHARS;
    const values = large
      ? [this.d.id, JSON.stringify([{ ...writes[0], body: null }]), writes[0]!.body]
      : [this.d.id, JSON.stringify(writes), null];
    return { ...this.d.sql.complete, values };
  }

  // ---- both ------------------------------------------------------------------------------------

  /**
   * One statement on a pooled connection (synchronous_commit off when so configured), autocommit
   * unless it is a claim.
   *
   * A claim runs in a transaction with `SET LOCAL statement_timeout = dbTimeoutMs` (and the same
   * idle_in_transaction_session_timeout: a daemon frozen between the claim and its COMMIT would
   * otherwise keep the claimed rows and its budget row locked for as long as it is frozen, which
   * the autocommit claim of before could not; chaos-pause.test.ts freezes one there), and the pipe
   * does not forget it at its client-side deadline: a claim given up on there (a lock it waits for,
   * a stalled server) would otherwise go on at the server and could commit after the orphan reclaim
   * that the failure asks for had run, leaving its rows 'processing' under this daemon's id, held
   * by nobody, until their lease expired (issue 10). Now PostgreSQL cancels the statement by its
   * own deadline, the connection is kept until the transaction's outcome is back (withClient's
   * `abandon`), withoutClaims() waits for that as for a running claim, and the orphan reclaim runs
   * after it: rows such a transaction committed after all go back at once. If no outcome comes
   * (the connection is dead), the client is destroyed after another 2 × dbTimeoutMs, by when the
   * server's statement_timeout has ended the statement whatever became of the connection, and one
   * more orphan reclaim runs then.
   *
   * Cost: the claim's BEGIN / SET LOCAL and its COMMIT are two more round trips than the autocommit
   * statement of before (none with synchronousCommit off, which opened a transaction already).
   * Measured by bench/claim-transaction.ts (claims of 100 rows, 8 alternating rounds of 300, load
   * 8–9): CPU per claim, medians, backend 2,733 → 2,967 µs and process 571 → 638 µs, about 3 µs a
   * request, inside the rounds' own spread (backend 2,467–4,367 µs autocommit); wall 7.9 → 8.0 ms.
   */
  private async statement(q: pg.QueryConfig, claim = false): Promise<unknown[]> {
    const c = this.d.config;
    const abandon: Abandon | undefined = claim
      ? { settleMs: 2 * c.dbTimeoutMs, onAbandoned: (over) => this.abandoned(over) }
      : undefined;
    return withClient(
      this.d.db,
      c.dbTimeoutMs,
      claim ? 'claim' : 'write',
      async (client) => {
        if (c.synchronousCommit && !claim) return (await client.query(q)).rows;
        const bound = claim ? c.dbTimeoutMs : undefined;
        const options = { asyncCommit: !c.synchronousCommit, timeoutMs: bound, idleTimeoutMs: bound };
        return inTransaction(client, async (t) => (await t.query(q)).rows, options);
      },
      abandon,
    );
  }

  /** A claim given up on at its deadline: counted as running until its outcome is known. */
  private abandoned(over: Promise<boolean>): void {
    this.claimsAbandoned++;
    void over.then((known) => {
      this.claimsAbandoned--;
      this.claimEnded();
      // Whatever it committed is visible now (known), or cannot commit any more (the server's
      // statement_timeout has passed): the orphan reclaim hands it back.
      this.d.maintenance.reclaimOrphansSoon();
      if (!known)
        this.d.log.warn('a claim given up on at its deadline did not end; its connection is closed');
    });
  }

  private claimEnded(): void {
    if (this.claimsRunning === 0 && this.claimsAbandoned === 0)
      for (const resolve of this.claimsIdle.splice(0)) resolve();
  }

  private failed(what: string, err: unknown): void {
    const backoffMs = this.scheduler.failed();
    this.d.log.warn(`${what} failed; backing off`, { ...errorFields(err), backoffMs });
    // After a failure, a later claim may come back short for reasons that are not an empty backlog
    // (rows still locked by a statement whose connection died): the live models are seeded again
    // once the backoff ends, so a model judged dry meanwhile is claimed again without a poll.
    this.d.budgets.reseed(backoffMs);
    if (isConnectionError(err) || (err as Error).name === 'QueryTimeoutError') {
      this.d.maintenance.reclaimOrphansSoon();
    }
  }
}
