import type { PaceClock } from '../../src/db/pace.js';

/**
 * A clock for paced work (src/db/pace.ts) whose every reading moves it `stepMs` on, and whose sleep
 * only records what it was asked: pauses are counted and sized without waiting or timing anything.
 */
export function steppingClock(stepMs = 10): PaceClock & { sleeps: number[] } {
  let t = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => {
      t += stepMs;
      return t;
    },
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  };
}
