import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * The completion window closes while the upstream is slow or throttling: no retry is scheduled past
 * the deadline, in-flight requests are aborted, unsent ones are never sent, and the batch ends
 * `expired` with every request accounted for in its output or error file.
 */

let mock: MockUpstream;
let t: TestServer;
/** A batch object that said "expired" before the batch was finalized (see the known bug below). */
let premature: unknown = null;

beforeAll(async () => {
  mock = await startMockUpstream();
  mock.setBehaviour((req) => {
    if (req.customId === 'throttled') {
      return { kind: 'status', status: 429, headers: { 'retry-after': '60' } };
    }
    if (req.customId?.startsWith('hang')) return { kind: 'hang' };
    return { kind: 'ok' };
  });
  t = await startTestServer({
    daemon: true,
    routing: { upstream: mock.url, upstreamApiKey: 'sk-deadline', models: { 'gpt-test': { limit: 3 } } },
    daemonConfig: { pollIntervalMs: 100, requestTimeoutMs: 60_000, maxRetries: 5, logger: () => {} },
  });
});

afterAll(async () => {
  await t?.close();
  await mock?.close();
});

describe('deadline', () => {
  it('expires the batch: no retry past the deadline, in-flight aborted, unsent never sent', async () => {
    const lines = [
      chatLine(0, { custom_id: 'throttled' }),
      chatLine(1, { custom_id: 'hang-1' }),
      chatLine(2, { custom_id: 'hang-2' }),
      ...Array.from({ length: 5 }, (_, i) => chatLine(i + 3, { custom_id: `queued-${i}` })),
    ];
    const file = await upload(t.alice, jsonl(lines));
    const started = Date.now();
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '4s' as '24h',
    });
    const batch = await waitFor(
      async () => {
        const b = await t.alice.batches.retrieve(created.id);
        if (b.status === 'expired' && b.expired_at === null) premature ??= b;
        return b.status === 'expired' && b.expired_at !== null ? b : null;
      },
      20_000,
      50,
    );
    const endedAfterMs = Date.now() - started;
    expect(endedAfterMs).toBeGreaterThanOrEqual(3500);
    expect(batch.expired_at).not.toBeNull();
    expect(batch.request_counts?.total).toBe(8);

    // The throttled request was tried once: a 60 s Retry-After lands past the 4 s deadline.
    expect(mock.countsByCustomId.get('throttled')).toBe(1);
    // Three slots: the throttled one and the two hangs went out; the queued ones never did, since
    // the hangs held their slots until the deadline aborted them.
    expect(mock.countsByCustomId.get('hang-1')).toBe(1);
    expect(mock.countsByCustomId.get('hang-2')).toBe(1);
    const queuedSent = [...mock.countsByCustomId.keys()].filter((id) => id.startsWith('queued-'));
    // A queued request may take the throttled one's slot once it failed; none is sent twice.
    for (const id of queuedSent) expect(mock.countsByCustomId.get(id)).toBe(1);

    const errors = (await (await t.alice.files.content(batch.error_file_id!)).text())
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            custom_id: string;
            response: { status_code: number } | null;
            error: { code: string } | null;
          },
      );
    const output = batch.output_file_id
      ? (await (await t.alice.files.content(batch.output_file_id)).text()).trim().split('\n').filter(Boolean)
      : [];
    // Every request is in exactly one of the two files.
    expect(errors.length + output.length).toBe(8);
    const byId = new Map(errors.map((e) => [e.custom_id, e]));
    expect(byId.get('throttled')?.response?.status_code).toBe(429);
    expect(byId.get('hang-1')?.error?.code).toBe('batch_expired');
    expect(byId.get('hang-2')?.error?.code).toBe('batch_expired');
    for (let i = 0; i < 5; i++) {
      const e = byId.get(`queued-${i}`);
      if (e) expect(e.error?.code).toBe('batch_expired');
    }
    // Nothing left in flight or pending in the database.
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t.s}.requests WHERE state IN ('pending', 'claimed', 'processing')
          AND batch_id = (SELECT id FROM ${t.s}.batches WHERE replace(id::text, '-', '') = $1)`,
      [created.id.slice('batch_'.length)],
    );
    expect(rows[0].n).toBe(0);
  }, 40_000);

  /**
   * KNOWN BUG (reported; run with FUSILLADE_KNOWN_BUGS=1): once the deadline passes, the batch
   * object says "expired" (src/domain/batch-status.ts derives it from expires_at) while in-flight
   * requests are still being aborted and before finalize: expired_at, output_file_id and
   * error_file_id are all null. Clients treat "expired" as final (the openai SDK's pollers, our own
   * CLI's FINAL_STATUSES), so they stop polling and find no results. Seen: status "expired",
   * request_counts {completed: 5, failed: 1} of 8, output_file_id null.
   */
  it.skipIf(!process.env.FUSILLADE_KNOWN_BUGS)(
    'never shows a final status before the batch is finalized',
    () => {
      expect(premature).toBeNull();
    },
  );
});
