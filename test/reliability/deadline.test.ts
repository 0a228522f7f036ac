import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload, uuidOf } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * The completion window closes while the upstream is slow or throttling: no retry is scheduled past
 * the deadline, in-flight requests are aborted, unsent ones are never sent, and the batch ends
 * `expired` with every request accounted for in its output or error file.
 */

let mock: MockUpstream;
let t: TestServer;
const WINDOW_S = 15;

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
    // 15 s, not 4: the first three requests must be on the wire before the deadline, and a loaded
    // machine may take seconds to claim and send them (with 4 s the batch could expire first, and
    // the hangs never went out).
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: `${WINDOW_S}s` as '24h',
    });
    const batch = await waitFor(
      async () => {
        const b = await t.alice.batches.retrieve(created.id);
        if (b.status === 'expired' && b.expired_at === null) premature ??= b;
        return b.status === 'expired' && b.expired_at !== null ? b : null;
      },
      120_000,
      50,
    );
    const endedAfterMs = Date.now() - started;
    expect(endedAfterMs).toBeGreaterThanOrEqual(WINDOW_S * 1000 - 500);
    expect(batch.expired_at).not.toBeNull();
    expect(batch.request_counts?.total).toBe(8);

    // The throttled request was tried once: a 60 s Retry-After lands past the 15 s deadline.
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
    // (The daemon ends the rows it held queued when it sees the expiry: wait for it.)
    const unfinished = async () =>
      (
        await t.db.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${t.s}.requests WHERE state IN ('pending', 'claimed', 'processing')
              AND batch_id = (SELECT id FROM ${t.s}.batches WHERE replace(id::text, '-', '') = $1)`,
          [created.id.slice('batch_'.length)],
        )
      ).rows[0]!.n;
    await expect.poll(unfinished).toBe(0);
  });

  /**
   * Was a known bug: once the deadline passed, the batch object said "expired" (derived from
   * expires_at) while in-flight requests were still being aborted and before finalize, with
   * expired_at, output_file_id and error_file_id null. Clients treat "expired" as final (the openai
   * SDK's pollers, our own CLI's FINAL_STATUSES), so they stopped polling and found no results.
   */
  it('never shows a final status before the batch is finalized', () => {
    expect(premature).toBeNull();
  });
});

/**
 * The window between the deadline and the end of the batch, held open on purpose: a request stays
 * in flight (as if its daemon were still aborting it), so every reader is checked while the batch
 * is past its deadline but not finalized, then again once it has ended.
 */
describe('past the deadline, not yet finalized', () => {
  let u: TestServer;
  beforeAll(async () => {
    u = await startTestServer();
  });
  afterAll(async () => {
    await u?.close();
  });

  const dashboard = async (path: string) => {
    const res = await fetch(`${u.server.url}${path}`, { headers: { authorization: `Bearer ${u.aliceKey}` } });
    expect(res.status).toBe(200);
    return (await res.json()) as { status?: string; data: { id: string; status: string }[] };
  };

  it('reads finalizing (not expired) until it has ended, then expired with its files', async () => {
    const file = await upload(u.alice, jsonl([chatLine(1), chatLine(2), chatLine(3)]));
    const created = await u.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const uuid = uuidOf(created.id);
    // Line 1 answered, line 2 on the wire, line 3 never sent; then the deadline passes.
    await u.db.pool.query(
      `UPDATE ${u.s}.requests SET state = 'completed', completed_at = now(), started_at = now(),
              response_status = 200, response_body = '{"ok":true}'
        WHERE batch_id = $1 AND line_number = 1`,
      [uuid],
    );
    await u.db.pool.query(
      `UPDATE ${u.s}.requests SET state = 'processing', daemon_id = gen_random_uuid(), claimed_at = now(),
              lease_expires_at = now() + interval '1 hour', started_at = now(), attempt = 1
        WHERE batch_id = $1 AND line_number = 2`,
      [uuid],
    );
    await u.db.pool.query(
      `UPDATE ${u.s}.batches SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [uuid],
    );
    // Something (a daemon's sweep, a cancel) tries to end it: it cannot, a request is in flight.
    expect(await u.server.manager.finalizeBatch(uuid)).toBe(false);

    const during = await u.alice.batches.retrieve(created.id);
    expect(during.status).toBe('finalizing');
    expect(during.expired_at).toBeNull();
    expect(during.output_file_id).toBeNull();
    const listed = (await u.alice.batches.list()).data.find((b) => b.id === created.id);
    expect(listed?.status).toBe('finalizing');
    // The unsent request will never be sent: it already counts as failed (canceled), not pending.
    expect(during.request_counts).toMatchObject({ total: 3, completed: 1, failed: 1 });
    // The dashboard's list, its status filter (SQL) and its progress agree.
    const dashList = await dashboard('/api/dashboard/batches');
    expect(dashList.data.find((b) => b.id === created.id)?.status).toBe('finalizing');
    expect((await dashboard('/api/dashboard/batches?status=expired')).data).toHaveLength(0);
    expect((await dashboard('/api/dashboard/batches?status=finalizing')).data).toHaveLength(1);
    expect((await dashboard(`/api/dashboard/batches/${created.id}/progress`)).status).toBe('finalizing');
    // It can no longer be cancelled (it will end expired), nor its failures retried.
    const cancel = await u.alice.batches.cancel(created.id).catch((e: unknown) => e);
    expect(cancel).toMatchObject({ status: 400 });
    expect(String((cancel as Error).message)).toMatch(/completion window has passed/);
    expect((await u.alice.batches.retrieve(created.id)).cancelling_at).toBeNull();

    // The daemon aborts the in-flight request; the batch ends expired, with its files.
    await u.db.pool.query(
      `UPDATE ${u.s}.requests SET state = 'canceled', daemon_id = NULL, claimed_at = NULL, lease_expires_at = NULL,
              completed_at = now(), error_code = 'batch_expired'
        WHERE batch_id = $1 AND line_number = 2`,
      [uuid],
    );
    expect(await u.server.manager.finalizeBatch(uuid)).toBe(true);
    const ended = await u.alice.batches.retrieve(created.id);
    expect(ended.status).toBe('expired');
    expect(ended.expired_at).not.toBeNull();
    expect(ended.output_file_id).not.toBeNull();
    expect(ended.error_file_id).not.toBeNull();
    expect(ended.request_counts).toMatchObject({ total: 3, completed: 1, failed: 2 });
    expect((await dashboard('/api/dashboard/batches?status=expired')).data).toHaveLength(1);
    const errors = (await (await u.alice.files.content(ended.error_file_id!)).text()).trim().split('\n');
    expect(errors.map((l) => JSON.parse(l).error?.code)).toEqual(['batch_expired', 'batch_expired']);
  });
});
