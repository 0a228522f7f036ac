import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressFinished, DAEMON_COMPRESS_PACE } from '../../src/db/compress.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';
import { steppingClock } from '../support/pace-clock.js';

/**
 * The paced compression (src/db/compress.ts `pace`, src/db/pace.ts): it waits before each chunk in
 * proportion to its work, on a clock of the test's own (test/support/pace-clock.ts), so nothing
 * depends on the machine's speed.
 */
let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 4 });
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

/** An ended batch of `n` answers, left uncompressed (the daemon's own pass is off). */
async function endedBatch(n: number): Promise<string> {
  const m = db.manager({ logger: () => {} });
  const daemon = await m.run({ pollIntervalMs: 50, compressFinishedBodies: false });
  try {
    const batchId = await createBatch(m, mockTemplates(mock, n));
    await waitForBatchEnd(m, batchId);
    return batchId;
  } finally {
    await daemon.stop();
  }
}

describe('compression with a pace', () => {
  it('pauses before each chunk, pace times the work since the last pause, and compresses the same', async () => {
    await endedBatch(5);
    const clock = steppingClock();
    const report = await compressFinished(db.pool, db.schema, {
      chunkRows: 2,
      pace: DAEMON_COMPRESS_PACE,
      clock,
    });
    expect(report).toMatchObject({ batches: 1, answers: 5, incomplete: false });
    // Chunks of lines 1-2, 3-4 and 5, then the read that finds the batch's end: four pauses.
    expect(clock.sleeps).toEqual(Array(4).fill(DAEMON_COMPRESS_PACE * 10));
  });

  it('does not wait at pace 0, stops at a stop asked during a pause, and refuses a bad pace', async () => {
    await endedBatch(3);
    let stopping = false;
    const clock = steppingClock();
    const stopped = await compressFinished(db.pool, db.schema, {
      chunkRows: 2,
      pace: 3,
      clock: {
        now: clock.now,
        sleep: async (ms) => {
          stopping = true;
          await clock.sleep(ms);
        },
      },
      shouldStop: () => stopping,
    });
    expect(stopped).toMatchObject({ incomplete: true, answers: 0 });
    expect(clock.sleeps).toEqual([30]);

    const unpaced = steppingClock();
    expect(await compressFinished(db.pool, db.schema, { chunkRows: 2, clock: unpaced })).toMatchObject({
      answers: 3,
      incomplete: false,
    });
    expect(unpaced.sleeps).toEqual([]);
    await expect(compressFinished(db.pool, db.schema, { pace: -1 })).rejects.toThrow(/compress pace must be/);
  });
});
