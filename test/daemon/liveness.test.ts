import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type FreeLock, LostDaemonTracker } from '../../src/daemon/liveness.js';

/** The pure part of liveness (src/daemon/liveness.ts): which free locks make a daemon lost. */

const free = (id: string, heartbeatMs: number, nowMs: number): FreeLock => ({
  id,
  heartbeat_at: new Date(heartbeatMs),
  now: new Date(nowMs),
});

describe('lost daemon tracker', () => {
  it('declares a daemon lost once its lock stayed free for the grace with no heartbeat since', () => {
    const t = new LostDaemonTracker(1000);
    expect(t.observe([free('a', 0, 100)], 100)).toEqual([]);
    expect(t.observe([free('a', 0, 600)], 600)).toEqual([]);
    expect(t.observe([free('a', 0, 1100)], 1100)).toEqual([{ id: 'a', since: new Date(100) }]);
  });

  it('forgets a daemon whose lock is held again, and starts over after a heartbeat', () => {
    const t = new LostDaemonTracker(1000);
    t.observe([free('a', 0, 100)], 100);
    t.observe([], 600); // held again
    expect(t.size).toBe(0);
    expect(t.observe([free('a', 0, 700)], 700)).toEqual([]);
    // It heartbeat after the first sighting: alive, watched afresh from this probe.
    expect(t.observe([free('a', 900, 1800)], 1800)).toEqual([]);
    expect(t.observe([free('a', 900, 2500)], 2500)).toEqual([]);
    expect(t.observe([free('a', 900, 2800)], 2800)).toEqual([{ id: 'a', since: new Date(1800) }]);
  });

  it('never declares a daemon that heartbeats at least once per grace period (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 50, max: 600 }), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 999 }),
        (probeGaps, beatEvery) => {
          const t = new LostDaemonTracker(1000);
          let now = 0;
          for (const gap of probeGaps) {
            now += gap;
            // Its last heartbeat is never older than `beatEvery` (< grace) at a probe.
            const lastBeat = now - (now % beatEvery);
            if (t.observe([free('a', lastBeat, now)], now).length > 0) return false;
          }
          return true;
        },
      ),
    );
  });

  it('declares a silent daemon with a free lock within grace + one probe interval (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 40 }), (gaps) => {
        const t = new LostDaemonTracker(1000);
        let now = 0;
        let first: number | null = null;
        for (const gap of [0, ...gaps, ...Array(10).fill(500)]) {
          now += gap;
          first ??= now;
          const lost = t.observe([free('a', -1, now)], now);
          if (lost.length > 0) return now - first >= 1000 && now - first < 1000 + 500;
        }
        return false;
      }),
    );
  });
});
