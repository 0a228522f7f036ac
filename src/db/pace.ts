/**
 * Pacing of background work (the daemons' purge and compression): after working for a while, the
 * work waits `pace` times as long, so it takes at most 1 / (1 + pace) of the time it runs over. Work
 * that takes longer (a loaded machine) is followed by a longer wait: the share stays the same
 * whatever the load.
 */

/** The time and the waiting a Pacer uses; tests give their own. */
export interface PaceClock {
  /** Milliseconds from any fixed origin. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: PaceClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** The longest single sleep of a pause: how late a stop request is seen. */
export const PAUSE_SLICE_MS = 250;

/** The pause owed after `workedMs` of work at `pace` (0 for no work or no pace). */
export function pauseAfter(workedMs: number, pace: number): number {
  return workedMs > 0 ? workedMs * pace : 0;
}

/** Throws a RangeError naming `what` unless `pace` is a finite number ≥ 0. */
export function checkPace(pace: number, what = 'pace'): number {
  if (typeof pace !== 'number' || !Number.isFinite(pace) || pace < 0) {
    throw new RangeError(`${what} must be a finite number >= 0, got ${String(pace)}`);
  }
  return pace;
}

/**
 * Counts work from its creation (or its last pause) and, at pause(), waits `pace` times the work
 * since then. Call pause() before each unit of work: the first costs nothing, and no wait follows
 * the last unit.
 */
export class Pacer {
  private since: number;
  /** Pauses taken and their total, ms. */
  pauses = 0;
  pausedMs = 0;

  constructor(
    private readonly pace: number,
    private readonly clock: PaceClock = realClock,
  ) {
    checkPace(pace);
    this.since = clock.now();
  }

  /**
   * Waits pace × the work since the last pause (nothing at pace 0), in slices of at most
   * PAUSE_SLICE_MS, ending early once `stop` says so (a stopping daemon does not wait out a pause).
   */
  async pause(stop: () => boolean = () => false): Promise<void> {
    if (this.pace === 0) return;
    let left = pauseAfter(this.clock.now() - this.since, this.pace);
    if (left > 0) {
      this.pauses++;
      this.pausedMs += left;
    }
    while (left > 0 && !stop()) {
      const slice = Math.min(left, PAUSE_SLICE_MS);
      await this.clock.sleep(slice);
      left -= slice;
    }
    this.since = this.clock.now();
  }
}
