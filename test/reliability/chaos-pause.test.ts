import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, waitFor } from '../support/mock-upstream.js';
import { DaemonFleet, type DaemonProcess, taggedUrl, uniqueTag } from './support/daemons.js';

/**
 * A daemon frozen (SIGSTOP) for longer than its lease and its dead-daemon time, while its requests
 * are on the wire. Another daemon reclaims and completes them. When the frozen one resumes, the
 * upstream's late answers reach it, and it tries to write them: the database's guards (state,
 * daemon and attempt) must refuse every one, leaving what the other daemon wrote untouched.
 */

const SLOW = 8;
const LEASE_MS = 120_000;

let db: TestDb;
let mock: MockUpstream;
let fleet: DaemonFleet;
const tag = uniqueTag('pause');
/** First attempts of `slow-` requests are held at the upstream until the test lets them answer. */
let releaseAttemptOne!: () => void;
const attemptOneMayAnswer = new Promise<void>((resolve) => {
  releaseAttemptOne = resolve;
});

/** Sessions of the fleet inside a transaction (only daemon A runs when this is asked). */
async function inTransaction(): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL`,
    [tag],
  );
  return rows[0].n;
}

/**
 * SIGSTOPs `d` at a moment when it is (insideTransaction) or is not inside a database transaction,
 * retrying with SIGCONT in between. The claim transaction lasts milliseconds, so freezing inside it
 * takes a few tries.
 */
async function freeze(d: DaemonProcess, insideTransaction: boolean): Promise<void> {
  for (let i = 0; i < 400; i++) {
    d.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 30));
    if ((await inTransaction()) > 0 === insideTransaction) return;
    d.kill('SIGCONT');
    await new Promise((r) => setTimeout(r, Math.random() * (insideTransaction ? 15 : 60)));
  }
  throw new Error(`could not freeze the daemon ${insideTransaction ? 'inside' : 'outside'} a transaction`);
}

/** Each answer says which attempt it served, so the test can tell whose result was stored. */
function answer(customId: string | null, attemptNo: number) {
  return {
    kind: 'status' as const,
    status: 200,
    body: {
      id: `chatcmpl-${customId}-${attemptNo}`,
      object: 'chat.completion',
      served_attempt: attemptNo,
      choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    },
  };
}

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour(async (req) => {
    if (req.attemptNo === 1 && req.customId?.startsWith('slow-')) await attemptOneMayAnswer;
    return answer(req.customId, req.attemptNo);
  });
  fleet = new DaemonFleet({
    databaseUrl: taggedUrl(TEST_DATABASE_URL, tag),
    schema: db.schema,
    upstream: mock.url,
    upstreamApiKey: 'sk-pause',
    modelLimits: { 'gpt-pause': 16 },
    daemon: {
      heartbeatIntervalMs: 200,
      deadDaemonAfterMs: 1000,
      // Far longer than the test: A's rows go to B because A is declared dead, not by a lease.
      leaseMs: LEASE_MS,
      requestTimeoutMs: LEASE_MS - 60_000,
      pollIntervalMs: 200,
      shutdownGraceMs: 1000,
      // Also how long PostgreSQL lets a frozen daemon sit inside a transaction.
      dbTimeoutMs: 3000,
    },
  });
});

afterAll(async () => {
  await fleet?.stopAll();
  await mock?.close();
  await db?.close();
});

interface Row {
  custom_id: string;
  state: string;
  daemon_id: string | null;
  attempt: number;
  response_body: string;
  completed_at: Date;
}

async function rows(batchId: string): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `SELECT t.custom_id, r.state, r.daemon_id, r.attempt, r.response_body, r.completed_at
       FROM ${db.schema}.requests r JOIN ${db.schema}.request_templates t ON t.id = r.template_id
      WHERE r.batch_id = $1 ORDER BY r.line_number`,
    [batchId],
  );
  return rows;
}

describe('chaos: a daemon frozen past its lease', () => {
  it("refuses the frozen daemon's late results: what the other daemon wrote stays", async () => {
    const manager = db.manager({ upstreamRouter: fleet.router() });
    const a = await fleet.start();
    const batchId = await createBatch(
      manager,
      Array.from({ length: SLOW }, (_, i) => ({
        endpoint: 'http://127.0.0.1:9',
        method: 'POST',
        path: '/v1/chat/completions',
        body: JSON.stringify({ model: 'gpt-pause', messages: [] }),
        model: 'gpt-pause',
        apiKey: '',
        customId: `slow-${i}`,
      })),
    );
    // Every request is on the wire from daemon A.
    // Counted on arrival (the mock records a request once its answer is decided).
    await waitFor(
      () => [...mock.countsByCustomId.keys()].filter((id) => id.startsWith('slow-')).length >= SLOW,
      30_000,
    );
    // Frozen between transactions: this test is about late writes (see the known bug below for a
    // freeze inside the claim transaction).
    await freeze(a, false);
    const frozenAt = Date.now();
    try {
      const b = await fleet.start();
      // B declares A dead, reclaims its rows and sends them again; the second attempts answer at once.
      const byB = await waitFor(
        async () => {
          const r = await rows(batchId);
          return r.every((x) => x.state === 'completed') ? r : null;
        },
        30_000,
        50,
      );
      const reclaimedAfterMs = Date.now() - frozenAt;
      for (const r of byB) {
        expect(r.daemon_id).toBe(b.daemonId);
        expect(r.attempt).toBe(2);
        expect(JSON.parse(r.response_body).served_attempt).toBe(2);
      }
      // Now the upstream answers A's first attempts; the answers wait in the frozen A's sockets.
      releaseAttemptOne();
      await waitFor(
        () =>
          mock.requests.filter(
            (r) => r.customId?.startsWith('slow-') && r.attemptNo === 1 && r.endedAt !== null,
          ).length === SLOW,
        30_000,
      );
      a.kill('SIGCONT');
      const pausedMs = Date.now() - frozenAt;

      // A wakes up, reads the late answers and tries to write them: each write is refused.
      await waitFor(() => (a.output().stderr.match(/stale write refused/g) ?? []).length >= SLOW, 20_000);
      const after = await rows(batchId);
      expect(after).toEqual(byB);
      const status = await manager.getBatchStatus(batchId);
      expect(status).toMatchObject({ status: 'completed', completedRequests: SLOW, failedRequests: 0 });
      expect(mock.countsByCustomId.size).toBe(SLOW);
      for (const n of mock.countsByCustomId.values()) expect(n).toBe(2);
      // A is alive and well after its nap.
      expect(a.exitCode).toBeNull();
      console.log(
        JSON.stringify({
          scenario: 'sigstop-past-lease',
          requests: SLOW,
          pausedMs,
          leaseMs: LEASE_MS,
          reclaimedAndCompletedByOtherMs: reclaimedAfterMs,
          staleWritesRefused: (a.output().stderr.match(/stale write refused/g) ?? []).length,
        }),
      );
    } finally {
      releaseAttemptOne();
      a.kill('SIGCONT');
    }
  }, 180_000);

  /**
   * Found by this suite: a daemon frozen inside its claim transaction kept the model_limits row
   * locks, and nothing ended that transaction, so every other daemon blocked on the model and a new
   * one failed to start. The claim transaction now sets idle_in_transaction_session_timeout.
   */
  it('a daemon frozen inside its claim transaction does not stall the others', async () => {
    const manager = db.manager({ upstreamRouter: fleet.router() });
    // Only the daemon to freeze may carry the fleet's tag while freezing.
    for (const d of fleet.running) {
      d.kill('SIGKILL');
      await d.exited;
    }
    const a = await fleet.start();
    try {
      const batchId = await createBatch(
        manager,
        Array.from({ length: 50 }, (_, i) => ({
          endpoint: 'http://127.0.0.1:9',
          method: 'POST',
          path: '/v1/chat/completions',
          body: JSON.stringify({ model: 'gpt-pause', messages: [] }),
          model: 'gpt-pause',
          apiKey: '',
          customId: `frozen-${i}`,
        })),
      );
      await freeze(a, true);
      await fleet.start();
      const done = await waitFor(
        async () => {
          const st = await manager.getBatchStatus(batchId);
          return st.completedRequests >= 40 ? st : null;
        },
        20_000,
        100,
      );
      expect(done.completedRequests).toBeGreaterThanOrEqual(40);
    } finally {
      a.kill('SIGCONT');
    }
  }, 90_000);
});
