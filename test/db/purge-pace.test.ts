import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAUSE_SLICE_MS, type PaceClock, Pacer, pauseAfter } from '../../src/db/pace.js';
import { DAEMON_PURGE_PACE, purge } from '../../src/db/purge.js';
import { createTestDb, type TestDb, template } from '../support/db.js';
import { steppingClock } from '../support/pace-clock.js';

/**
 * The paced purge (src/db/pace.ts, purge()'s `pace`): it waits between its transactions in
 * proportion to its work. Time here is a clock of the test's own (test/support/pace-clock.ts), so
 * nothing depends on the machine's speed.
 */
describe('Pacer', () => {
  it('waits pace times the work since its last pause, in slices a stop ends', async () => {
    expect(pauseAfter(10, 3)).toBe(30);
    expect(pauseAfter(0, 3)).toBe(0);
    const clock = steppingClock();
    const pacer = new Pacer(3, clock);
    await pacer.pause(); // 10 ms of work since its creation
    await pacer.pause();
    expect(clock.sleeps).toEqual([30, 30]);

    const long = steppingClock(200);
    await new Pacer(3, long).pause(); // 600 ms owed
    expect(long.sleeps).toEqual([PAUSE_SLICE_MS, PAUSE_SLICE_MS, 600 - 2 * PAUSE_SLICE_MS]);

    const stopped = steppingClock(200);
    let asked = 0;
    await new Pacer(3, stopped).pause(() => ++asked > 1);
    expect(stopped.sleeps).toEqual([PAUSE_SLICE_MS]);
  });

  it('does not wait at pace 0 and refuses a negative or non-finite pace', async () => {
    const clock = steppingClock();
    const pacer = new Pacer(0, clock);
    await pacer.pause();
    await pacer.pause();
    expect(clock.sleeps).toEqual([]);
    expect(() => new Pacer(-1)).toThrow(RangeError);
    expect(() => new Pacer(Number.NaN)).toThrow(/finite number >= 0/);
  });
});

describe('purge with a pace', () => {
  let db: TestDb;
  beforeAll(async () => {
    db = await createTestDb({ max: 4 });
  });
  afterAll(async () => {
    await db.close();
  });

  /** An expired input file of `n` templates: the purge removes it in chunks. */
  async function expiredFile(n: number): Promise<string> {
    const m = db.manager({ logger: () => {} });
    const lines = Array.from({ length: n }, (_, i) => template(i + 1));
    return m.createFile('old.jsonl', null, lines, { expiresAt: new Date(Date.now() - 1000) });
  }

  it('pauses before each transaction after the first work, pace times as long, and removes the same', async () => {
    await expiredFile(7);
    const clock = steppingClock();
    const report = await purge(db.pool, db.schema, { chunkRows: 2, pace: DAEMON_PURGE_PACE, clock });
    expect(report).toMatchObject({ inputFiles: 1, templates: 7, incomplete: false });
    // The marking transaction, four chunks of templates (2 + 2 + 2 + 1) and the file's row: six
    // transactions, each after a pause of pace × the 10 ms the clock moved since the last one.
    expect(clock.sleeps).toEqual(Array(6).fill(DAEMON_PURGE_PACE * 10));
  });

  it('runs back to back at the default pace (purge run by hand) and stops at a stop asked during a pause', async () => {
    await expiredFile(5);
    const unpaced = steppingClock();
    const report = await purge(db.pool, db.schema, { chunkRows: 2, clock: unpaced });
    expect(report).toMatchObject({ inputFiles: 1, templates: 5 });
    expect(unpaced.sleeps).toEqual([]);

    await expiredFile(5);
    const clock = steppingClock();
    let stopping = false;
    const stopsDuringPause: PaceClock = {
      now: clock.now,
      sleep: async (ms) => {
        stopping = true;
        await clock.sleep(ms);
      },
    };
    const stopped = await purge(db.pool, db.schema, {
      chunkRows: 2,
      pace: 3,
      clock: stopsDuringPause,
      shouldStop: () => stopping,
    });
    expect(stopped).toMatchObject({ incomplete: true, templates: 0 });
    expect(clock.sleeps).toEqual([30]);
  });

  it('refuses a bad pace before touching anything', async () => {
    await expect(purge(db.pool, db.schema, { pace: -1 })).rejects.toThrow(/purge pace must be/);
    await expect(purge(db.pool, db.schema, { pace: Number.POSITIVE_INFINITY })).rejects.toBeInstanceOf(
      RangeError,
    );
  });
});
