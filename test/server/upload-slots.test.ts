import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multipartHead, openAndWrite, uploadHead } from '../reliability/support/multipart.js';
import { waitFor } from '../support/mock-upstream.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from './support.js';

/** Uploads past the pre-buffer hold a connection: they take turns, small ones never wait. */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ uploadPreBufferBytes: 1000, maxConcurrentUploads: 1 });
});
afterAll(() => t.close());

const lines = (n: number, from = 0) => jsonl(Array.from({ length: n }, (_, i) => chatLine(from + i)));

describe('upload slots', () => {
  it('queues a second large upload behind a stalled one, lets small ones through, and resumes on release', async () => {
    // A large upload that sends 4 KB (past the 1 KB pre-buffer) and then stalls, holding the slot.
    const big = Buffer.from(lines(40));
    const body = Buffer.concat([multipartHead(), big]);
    const stalled = await openAndWrite(
      t.server.port,
      Buffer.concat([uploadHead(t.server.port, t.aliceKey, body.length + 10_000), body]),
    );
    // The stalled upload holds the slot once its COPY is open (its rows stream into it). Waiting a
    // fixed time instead let a loaded machine start the second upload first, which then took the
    // slot and finished while the stalled one waited.
    const openCopies = async () =>
      (
        await t.db.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE state = 'active' AND query ILIKE 'COPY %' AND strpos(query, $1) > 0`,
          [t.db.schema],
        )
      ).rows[0].n as number;
    await waitFor(async () => (await openCopies()) === 1);

    let secondDone = false;
    const second = upload(t.alice, lines(40, 100), 'second.jsonl').then((f) => {
      secondDone = true;
      return f;
    });
    // Under the pre-buffer: needs no slot.
    const small = await upload(t.bob, lines(2), 'small.jsonl');
    expect(small.id).toMatch(/^file-/);
    // A chance for a server without slots to store the second upload meanwhile (a wait can only let
    // a wrong server pass, never fail a right one): it is still queued, and no second COPY opened.
    await new Promise((r) => setTimeout(r, 300));
    expect(secondDone).toBe(false);
    expect(await openCopies()).toBe(1);

    stalled.destroy();
    const file = await second;
    expect(file.filename).toBe('second.jsonl');
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.files f JOIN ${t.s}.request_templates r ON r.file_id = f.id WHERE f.owner = 'alice'`,
    );
    // Only the second upload's 40 lines: the stalled one stored nothing.
    expect(rows[0].n).toBe(40);
  });
});
