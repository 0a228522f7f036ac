import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Budget, type ClaimEntry, type HeldRow, SlotLedger } from '../../src/daemon/ledger.js';

/** The slot ledger (src/daemon/ledger.ts) on its own: no database, no clock, no HTTP. */

const budget = (model: string, slots: number, target = slots, peers = 0): Budget => ({
  model,
  slots,
  target,
  limit: slots,
  peers,
});

let next = 0;
const row = (model: string, batchId = 'b1', expiresMs: number | null = null): HeldRow => ({
  id: `r${next++}`,
  batchId,
  model,
  expiresMs,
});

/** Fills a claim of the plan with `n(entry)` rows per entry. */
function fill(plan: ClaimEntry[], n: (e: ClaimEntry) => number = (e) => e.cap, batchId = 'b1'): HeldRow[] {
  return plan.flatMap((e) => Array.from({ length: n(e) }, () => row(e.model, batchId)));
}

describe('slot ledger', () => {
  it('claims the free slots plus a little ahead, and sends only within the share', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 8)]);
    const plan = l.planClaim(0);
    expect(plan).toEqual([{ model: 'm', cap: 9 }]); // 8 free + 1 ahead (no rate observed yet)
    // The claim statement caps at slots − held: the ahead row must fit.
    expect(8 - l.claimHeld(plan[0]!, 0)).toBeGreaterThanOrEqual(9);
    l.claimed(plan, fill(plan), true);
    const { send } = l.take(0);
    expect(send).toHaveLength(8);
    expect(l.counts('m')).toMatchObject({ inFlight: 8, queued: 1 });
    // A finished attempt frees a slot, refilled at once from the queue, with no claim in between.
    l.finished('m');
    expect(l.take(1).send).toHaveLength(1);
    expect(l.counts('m')).toMatchObject({ inFlight: 8, queued: 0 });
  });

  it('sizes the rows held ahead from the observed rate and the claim round trip', () => {
    const l = new SlotLedger({ maxClaim: 1000, maxAhead: 1000 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 1000)]);
    l.observeClaimLatency(20);
    for (let i = 0; i < 30; i++) l.observeClaimLatency(20);
    // 1,000 rows a second for a few seconds.
    let t = 0;
    for (; t < 5000; t += 10) {
      const plan = l.planClaim(t);
      if (plan.length > 0) l.claimed(plan, fill(plan), true);
      const { send } = l.take(t);
      for (const r of send.slice(0, 10)) l.finished(r.model);
    }
    // ≈ 1 row/ms × 20 ms × 2 round trips.
    expect(l.ahead('m', t)).toBeGreaterThan(25);
    expect(l.ahead('m', t)).toBeLessThan(60);
  });

  it('holds a whole wave ahead when attempts of one latency finish together', () => {
    // 100 slots, attempts of 100 ms that finish in waves, claims that take 20 ms (a slow database).
    const l = new SlotLedger({ maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 100)]);
    for (let i = 0; i < 10; i++) l.observeClaimLatency(20);
    const inFlight: number[] = [];
    let refilledAtOnce = 0;
    for (let t = 0; t <= 2000; t += 100) {
      // The wave of t − 100 finishes; the freed slots are refilled from the queue, no claim between.
      if (t > 0) for (let i = 0; i < 100; i++) l.finished('m', 100);
      const { send } = l.take(t);
      inFlight.push(l.counts('m').inFlight);
      if (t > 0 && send.length === 100) refilledAtOnce++;
      // Claims come back before the next wave.
      for (let k = 0; k < 3; k++) {
        const plan = l.planClaim(t + 1);
        if (plan.length > 0) l.claimed(plan, fill(plan), true);
        l.take(t + 1);
      }
    }
    // Two round trips at 1 row/ms would hold ≈ 40 rows; one attempt's worth holds the whole wave.
    expect(l.ahead('m', 2000)).toBe(100);
    expect(refilledAtOnce).toBeGreaterThanOrEqual(18);
    expect(inFlight.every((n) => n <= 100)).toBe(true);
  });

  it('a short claim means nothing more is claimable until the next seed or poke', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 4)]);
    const plan = l.planClaim(0);
    l.claimed(
      plan,
      fill(plan, () => 2),
      true,
    );
    expect(l.take(0).send).toHaveLength(2);
    expect(l.planClaim(0)).toEqual([]);
    l.poke();
    expect(l.planClaim(0)).toEqual([{ model: 'm', cap: 3 }]);
  });

  it('holds back the end check of a batch while its model may still be claimed, until a claim of it comes back short', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 4)]);
    // Unknown model: nothing claims it, the batch may have ended.
    expect(l.mayHaveEnded('b0', 'other')).toBe(true);
    const full = l.planClaim(0);
    l.claimed(full, fill(full), true);
    // A full claim: the batch likely has pending rows, its end check waits.
    expect(l.mayHaveEnded('b1', 'm')).toBe(false);
    expect(l.finalizeDue([])).toEqual([]);
    for (const r of l.take(0).send) l.finished(r.model);
    const short = l.planClaim(0);
    const dry = l.claimed(short, [], true);
    expect(dry).toEqual(['m']);
    expect(l.finalizeDue(dry)).toEqual(['b1']);
    expect(l.finalizeDue(dry)).toEqual([]); // forgotten once due
    // Dry now: the next batch of the model is checked at once, until a poke makes it claimable.
    expect(l.mayHaveEnded('b2', 'm')).toBe(true);
    l.poke();
    expect(l.mayHaveEnded('b2', 'm')).toBe(false);
  });

  it('asks the admission hook, caps by the concurrency cap, and holds rows while not sendable', () => {
    let paused = true;
    const l = new SlotLedger({
      minAhead: 1,
      maxClaim: 100,
      hooks: {
        admissible: () => 3,
        concurrencyCap: () => 2,
        sendable: () => !paused,
      },
    });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 10)]);
    const plan = l.planClaim(0);
    expect(plan).toEqual([{ model: 'm', cap: 3 }]);
    l.claimed(plan, fill(plan), true);
    expect(l.take(0).send).toHaveLength(0);
    paused = false;
    expect(l.take(0).send).toHaveLength(2);
  });

  it('hands back a queued row past its send-by time instead of sending it after its lease', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 1)]);
    const late = { ...row('m', 'a'), sendByMs: 100 };
    const fresh = { ...row('m', 'a'), sendByMs: 1_000 };
    l.claimed([{ model: 'm', cap: 3 }], [row('m', 'a'), late, fresh], true);
    expect(l.take(0).send).toHaveLength(1);
    l.finished('m');
    // At 100 the late row's lease would not outlast an attempt: it goes back, the next one is sent.
    const { send, expired } = l.take(100);
    expect(expired.map((r) => r.id)).toEqual([late.id]);
    expect(send.map((r) => r.id)).toEqual([fresh.id]);
  });

  it('hands back queued rows of cancelled batches and past deadlines, and everything at stop', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 1)]);
    l.claimed(
      [{ model: 'm', cap: 4 }],
      [row('m', 'a'), row('m', 'b'), row('m', 'b', 5), row('m', 'c')],
      true,
    );
    // Fake the reservation the plan would have made.
    expect(l.release(new Set(['a'])).map((r) => r.batchId)).toEqual(['a']);
    expect(l.take(0).send.map((r) => r.batchId)).toEqual(['b']);
    l.finished('m');
    const { send, expired } = l.take(10);
    expect(expired.map((r) => r.expiresMs)).toEqual([5]);
    expect(send.map((r) => r.batchId)).toEqual(['c']);
    l.claimed([], [row('m', 'd')], true);
    l.stop();
    expect(l.planClaim(20)).toEqual([]);
    expect(l.release('all').map((r) => r.batchId)).toEqual(['d']);
  });

  it('reports demand and what it cannot give back, and asks to give back above its fair share', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 10 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 6)]);
    const plan = l.planClaim(0);
    l.claimed(plan, fill(plan), true);
    l.take(0);
    expect(l.budgetRequest()).toEqual([{ model: 'm', wanted: 6 + 1 + 10, used: 6 }]);
    // Another daemon arrives: the share halves, this daemon keeps its 6 in flight until they end.
    l.applyBudgets([budget('m', 6, 3, 1)]);
    expect(l.finished('m')).toBe(true);
    expect(l.take(0).send).toHaveLength(0);
  });

  it('holds nothing ahead by default until rows move (a stuck daemon takes no rows others could send)', () => {
    const l = new SlotLedger({ maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 3)]);
    const plan = l.planClaim(0);
    expect(plan).toEqual([{ model: 'm', cap: 3 }]);
    l.claimed(plan, fill(plan), true);
    expect(l.take(0).send).toHaveLength(3);
    l.poke();
    // Its slots are full and nothing has finished for seconds: no claim ahead.
    expect(l.planClaim(5000)).toEqual([]);
  });

  it('sends no model above the in-flight count a running rebalance was told, until its result', () => {
    const l = new SlotLedger({ minAhead: 1, maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 4)]);
    const plan = l.planClaim(0);
    l.claimed(plan, fill(plan), true);
    expect(l.take(0).send).toHaveLength(4);
    l.finished('m');
    l.finished('m');
    expect(l.budgetRequest()[0]).toMatchObject({ used: 2 });
    // The rebalance may grant only 2 (another daemon took the rest): nothing more goes out meanwhile.
    l.claimed([], [row('m'), row('m')], true);
    expect(l.take(1).send).toHaveLength(0);
    l.applyBudgets([budget('m', 3)]);
    expect(l.take(2).send).toHaveLength(1);
    l.budgetRequest();
    l.finished('m');
    // A freed slot is refilled at once, even while a rebalance runs, up to what it was told.
    expect(l.take(3).send).toHaveLength(1);
    expect(l.take(3).send).toHaveLength(0);
    l.applyBudgets([budget('m', 4)]);
    l.budgetRequest();
    l.rebalanceFailed();
    expect(l.take(4).send).toHaveLength(1);
  });

  it('after a rebalance whose COMMIT went out but whose outcome is unknown, sends nothing above the `used` it reported until a later result', () => {
    const l = new SlotLedger({ maxClaim: 100 });
    l.setLive(['m']);
    l.applyBudgets([budget('m', 4)]);
    l.claimed(
      [],
      Array.from({ length: 8 }, () => row('m')),
      true,
    );
    expect(l.take(0).send).toHaveLength(4);
    l.finished('m');
    l.finished('m');
    expect(l.budgetRequest()[0]).toMatchObject({ used: 2 });
    // The COMMIT's reply was lost: the row may now hold 2 slots (another daemon was granted the other
    // 2 in its room), or still 4. Only the 2 both cover may be in flight.
    l.rebalanceFailed('unknown');
    expect(l.take(1).send).toHaveLength(0);
    l.finished('m');
    expect(l.take(2).send).toHaveLength(1);
    expect(l.take(2).send).toHaveLength(0);
    // A failure before the COMMIT went out left the database as it was: the old budget holds again.
    l.budgetRequest();
    l.rebalanceFailed(false);
    expect(l.take(3).send).toHaveLength(2);
    // A later rebalance's result lifts the hold.
    l.finished('m');
    l.budgetRequest();
    l.rebalanceFailed('unknown');
    expect(l.take(4).send).toHaveLength(0);
    l.applyBudgets([budget('m', 4)]);
    expect(l.take(5).send).toHaveLength(1);
  });

  it('keeps every invariant over random operations (property)', () => {
    type Op =
      | { kind: 'budget'; slots: number; target: number; peers: number }
      | { kind: 'claim'; fraction: number; ok: boolean }
      | { kind: 'take'; dt: number }
      | { kind: 'finish'; pick: number }
      | { kind: 'cancel'; batch: number }
      | { kind: 'live'; on: boolean }
      | { kind: 'cap'; cap: number }
      | { kind: 'request' }
      | { kind: 'requestFailed' }
      | { kind: 'requestUnknown' };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        kind: fc.constant('budget' as const),
        slots: fc.integer({ min: 0, max: 20 }),
        target: fc.integer({ min: 0, max: 20 }),
        peers: fc.integer({ min: 0, max: 3 }),
      }),
      fc.record({
        kind: fc.constant('claim' as const),
        fraction: fc.double({ min: 0, max: 1 }),
        ok: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('take' as const), dt: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant('finish' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('cancel' as const), batch: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ kind: fc.constant('live' as const), on: fc.boolean() }),
      fc.record({ kind: fc.constant('cap' as const), cap: fc.integer({ min: 1, max: 30 }) }),
      fc.record({ kind: fc.constant('request' as const) }),
      fc.record({ kind: fc.constant('requestFailed' as const) }),
      fc.record({ kind: fc.constant('requestUnknown' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 200 }), (ops) => {
        let cap = 30;
        let now = 0;
        const l = new SlotLedger({ maxClaim: 7, maxAhead: 5, hooks: { concurrencyCap: () => cap } });
        const claimed = new Set<string>();
        const inFlight: HeldRow[] = [];
        const finished = new Set<string>();
        const handedBack = new Set<string>();
        let slots = 0;
        let target = 0;
        /** The `used` a running rebalance was told (null: none runs). */
        let reported: number | null = null;
        for (const o of ops) {
          switch (o.kind) {
            case 'budget': {
              // The rebalance never takes slots below the `used` it was told (budget.ts); rows sent
              // while it ran must fit in that.
              slots = Math.max(o.slots, reported ?? inFlight.length);
              reported = null;
              target = o.target;
              l.applyBudgets([budget('m', slots, target, o.peers)]);
              break;
            }
            case 'claim': {
              const plan = l.planClaim(now);
              for (const e of plan) if (e.cap > 7) return false;
              const rows = o.ok
                ? plan.flatMap((e) =>
                    Array.from({ length: Math.floor(e.cap * o.fraction) }, () =>
                      row(e.model, `b${next % 3}`, next % 5 === 0 ? now + 20 : null),
                    ),
                  )
                : [];
              for (const r of rows) claimed.add(r.id);
              l.claimed(plan, rows, o.ok);
              break;
            }
            case 'take': {
              now += o.dt;
              const share = Math.min(slots, target, cap);
              const before = inFlight.length;
              const { send, expired } = l.take(now);
              for (const r of expired) {
                if (r.expiresMs === null || r.expiresMs > now) return false;
                handedBack.add(r.id);
              }
              for (const r of send) {
                if (r.expiresMs !== null && r.expiresMs <= now) return false;
                inFlight.push(r);
              }
              // Rows are put in flight only below the share.
              if (send.length > 0 && inFlight.length > Math.max(share, before)) return false;
              if (inFlight.length > slots) return false;
              break;
            }
            case 'finish': {
              if (inFlight.length === 0) break;
              const [r] = inFlight.splice(o.pick % inFlight.length, 1);
              finished.add(r!.id);
              l.finished(r!.model);
              break;
            }
            case 'cancel':
              for (const r of l.release(new Set([`b${o.batch}`]))) handedBack.add(r.id);
              break;
            case 'live':
              l.setLive(o.on ? ['m'] : []);
              break;
            case 'cap':
              cap = o.cap;
              break;
            case 'request': {
              const r = l.budgetRequest().find((x) => x.model === 'm');
              if (r && r.used !== inFlight.length) return false;
              reported = r ? r.used : null;
              break;
            }
            case 'requestFailed':
              l.rebalanceFailed();
              reported = null;
              break;
            case 'requestUnknown':
              // The COMMIT went out and its reply was lost: the row may hold as little as `used`.
              l.rebalanceFailed('unknown');
              if (reported !== null) slots = reported;
              break;
          }
          const c = l.counts('m');
          if (c.claiming !== 0 || c.inFlight !== inFlight.length) return false;
          // Every claimed row is in exactly one place.
          const queued = new Set(l.queuedIds());
          const places = [...claimed].map(
            (id) =>
              Number(queued.has(id)) +
              Number(inFlight.some((r) => r.id === id)) +
              Number(finished.has(id)) +
              Number(handedBack.has(id)),
          );
          if (places.some((n) => n !== 1)) return false;
        }
        return true;
      }),
      { numRuns: 300 },
    );
  });
});
