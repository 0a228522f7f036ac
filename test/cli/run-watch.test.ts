import { describe, expect, it } from 'vitest';
import { countsSince, EndedTally, Wake } from '../../src/cli/run/watch.js';

describe("run's progress between counts", () => {
  it('adds what the daemon ended since the count returned, and never passes the total', () => {
    const tally = new EndedTally();
    tally.add('completed'); // told before the count returned: the count has it
    const counted = { total: 10, completed: 3, failed: 1, canceled: 0 };
    const at = tally.mark();
    tally.add('completed');
    tally.add('completed');
    tally.add('failed');
    tally.add('canceled');
    expect(countsSince(counted, at, tally.mark())).toEqual({
      total: 10,
      completed: 5,
      failed: 2,
      canceled: 1,
    });
    for (let i = 0; i < 5; i++) tally.add('completed');
    // 11 of 10 (a write in the count's snapshot told after it returned): the count alone until the next.
    expect(countsSince(counted, at, tally.mark())).toEqual(counted);
  });

  it('a sleep tells whether wake() ended it, also when the wake came first', async () => {
    const wake = new Wake();
    expect(await wake.sleep(1)).toBe(false);
    const sleeping = wake.sleep(3_600_000);
    wake.wake();
    expect(await sleeping).toBe(true);
    wake.wake();
    expect(await wake.sleep(3_600_000)).toBe(true);
  });
});
