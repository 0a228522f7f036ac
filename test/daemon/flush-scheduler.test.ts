import { describe, expect, it } from 'vitest';
import {
  type Clock,
  decideFlush,
  type FlushPolicy,
  FlushScheduler,
  type FlushState,
} from '../../src/daemon/flush-scheduler.js';

/** The flush scheduler (src/daemon/flush-scheduler.ts) against a fake clock. */

const policy: FlushPolicy = { maxClaims: 1, maxWrites: 1, writeBatch: 10, writeDelayMs: 5 };
const idle: FlushState = {
  claimsRunning: 0,
  writesRunning: 0,
  writesWaiting: 0,
  oldestWaitingAt: 0,
  claimWanted: false,
  stopping: false,
};

class FakeClock implements Clock {
  t = 0;
  timers: { at: number; fn: () => void }[] = [];
  now = () => this.t;
  setTimer = (ms: number, fn: () => void) => {
    const timer = { at: this.t + ms, fn };
    this.timers.push(timer);
    return timer;
  };
  clearTimer = (h: unknown) => {
    this.timers = this.timers.filter((t) => t !== h);
  };
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
}

describe('flush scheduler', () => {
  it('claims whenever a claim is wanted and none runs', () => {
    expect(decideFlush(policy, { ...idle, claimWanted: true }, 0, 0)).toMatchObject({ claim: true });
    expect(decideFlush(policy, { ...idle, claimWanted: true, claimsRunning: 1 }, 0, 0)).toMatchObject({
      claim: false,
    });
    expect(decideFlush(policy, { ...idle, claimWanted: true, stopping: true }, 0, 0).claim).toBe(false);
  });

  it('writes a full batch at once, a partial one after the delay, everything at stop', () => {
    const waiting = { ...idle, writesWaiting: 3, oldestWaitingAt: 100 };
    expect(decideFlush(policy, waiting, 102, 0)).toEqual({ claim: false, write: false, wakeAt: 105 });
    expect(decideFlush(policy, waiting, 105, 0).write).toBe(true);
    expect(decideFlush(policy, { ...waiting, writesWaiting: 10 }, 100, 0).write).toBe(true);
    expect(decideFlush(policy, { ...waiting, stopping: true }, 100, 0).write).toBe(true);
    expect(decideFlush(policy, { ...waiting, writesRunning: 1 }, 200, 0)).toEqual({
      claim: false,
      write: false,
      wakeAt: null,
    });
  });

  it('with room for two writes, a second starts only for a full batch: a partial one waits for the running write', () => {
    const two = { ...policy, maxWrites: 2 };
    const waiting = { ...idle, writesWaiting: 3, oldestWaitingAt: 100, writesRunning: 1 };
    expect(decideFlush(two, waiting, 200, 0)).toEqual({ claim: false, write: false, wakeAt: null });
    expect(decideFlush(two, { ...waiting, writesWaiting: 10 }, 100, 0).write).toBe(true);
    expect(decideFlush(two, { ...waiting, stopping: true }, 100, 0).write).toBe(true);
    expect(decideFlush(two, { ...waiting, writesRunning: 0 }, 105, 0).write).toBe(true);
    expect(decideFlush(two, { ...waiting, writesWaiting: 10, writesRunning: 2 }, 200, 0).write).toBe(false);
  });

  it('starts nothing during a backoff, and wakes up when it ends', () => {
    const clock = new FakeClock();
    const started: string[] = [];
    const state = { ...idle, claimWanted: true };
    const s = new FlushScheduler(
      policy,
      clock,
      () => state,
      (what) => {
        started.push(what);
        state.claimsRunning++;
      },
      () => 1,
    );
    expect(s.failed()).toBe(100);
    s.kick();
    expect(started).toEqual([]);
    clock.advance(99);
    expect(started).toEqual([]);
    clock.advance(1);
    expect(started).toEqual(['claim']);
    // Failures double the backoff up to 5 s; a success resets it.
    for (let i = 0; i < 10; i++) s.failed();
    expect(s.backoff).toBe(5000);
    s.succeeded();
    expect(s.backoff).toBe(0);
  });

  it('gathers outcomes until the batch is full or the oldest has waited the delay', () => {
    const clock = new FakeClock();
    const started: { what: string; n: number; at: number }[] = [];
    const state = { ...idle };
    const s = new FlushScheduler(
      policy,
      clock,
      () => state,
      (what) => {
        started.push({ what, n: state.writesWaiting, at: clock.t });
        state.writesWaiting = 0;
        state.writesRunning++;
      },
    );
    state.writesWaiting = 2;
    state.oldestWaitingAt = 0;
    s.kick();
    expect(started).toEqual([]);
    clock.advance(5);
    expect(started).toEqual([{ what: 'write', n: 2, at: 5 }]);
    // While that write runs, the next batch gathers, and goes when it ends.
    state.writesWaiting = 4;
    state.oldestWaitingAt = 6;
    clock.advance(10);
    s.kick();
    expect(started).toHaveLength(1);
    state.writesRunning = 0;
    s.kick();
    expect(started[1]).toEqual({ what: 'write', n: 4, at: 15 });
  });
});
