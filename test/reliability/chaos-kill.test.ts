import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, waitFor } from '../support/mock-upstream.js';
import { DaemonFleet, type DaemonProcess, taggedUrl, uniqueTag } from './support/daemons.js';

/**
 * Chaos: three `fusillade daemon` processes share one schema and one model limit of 16. Every 1–2 s
 * one of them is SIGKILLed and a new one started, for 30 s, while thousands of requests run against
 * a loopback mock with 40–80 ms of latency. At the end every request is completed exactly once in
 * the database, none is lost or stuck, the upstream never saw more than 16 at once, and requests
 * sent twice are at most those the killed daemons held at the kills.
 */

const MODEL = 'gpt-chaos';
const LIMIT = 16;
const REQUESTS = Number(process.env.CHAOS_REQUESTS ?? 2500);
const CHAOS_MS = Number(process.env.CHAOS_MS ?? 30_000);
const SECRET = 'sk-chaos-upstream-5e4d3c2b1a09';

let db: TestDb;
let mock: MockUpstream;
let fleet: DaemonFleet;

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream({ recordBodies: false });
  mock.setBehaviour(() => ({ kind: 'delay', ms: 40 + Math.floor(Math.random() * 40) }));
  fleet = new DaemonFleet({
    databaseUrl: taggedUrl(TEST_DATABASE_URL, uniqueTag('chaos')),
    schema: db.schema,
    upstream: mock.url,
    upstreamApiKey: SECRET,
    modelLimits: { [MODEL]: LIMIT },
    daemon: {
      heartbeatIntervalMs: 250,
      deadDaemonAfterMs: 1500,
      pollIntervalMs: 250,
      requestTimeoutMs: 5000,
      leaseMs: 10_000,
      dbTimeoutMs: 5000,
      shutdownGraceMs: 1000,
    },
  });
});

afterAll(async () => {
  await fleet?.stopAll();
  await mock?.close();
  await db?.close();
});

interface Kill {
  at: number;
  held: number;
  /** ms until another daemon had reclaimed every row the killed one held. */
  recoveredMs: number | null;
}

async function heldBy(daemonId: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM ${db.schema}.requests WHERE daemon_id = $1 AND state IN ('claimed', 'processing')`,
    [daemonId],
  );
  return rows[0].n;
}

describe('chaos: SIGKILL daemons in a loop', () => {
  it(
    'completes every request exactly once under repeated SIGKILL, within the global limit',
    async () => {
      const manager = db.manager();
      await Promise.all([fleet.start(), fleet.start(), fleet.start()]);
      const templates = Array.from({ length: REQUESTS }, (_, i) => ({
        endpoint: 'http://127.0.0.1:9', // the daemons' --upstream routes every model to the mock
        method: 'POST',
        path: '/v1/chat/completions',
        body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: `chaos ${i}` }] }),
        model: MODEL,
        apiKey: '',
        customId: `c-${i}`,
      }));
      const started = Date.now();
      const batchId = await createBatch(manager, templates);

      const kills: Kill[] = [];
      const recoveries: Promise<void>[] = [];
      const starting: Promise<DaemonProcess>[] = [];
      let lastKill = Date.now();
      while (Date.now() - started < CHAOS_MS) {
        // The next kill 1–2 s after the previous one (the bookkeeping between kills counts too).
        const due = lastKill + 1000 + Math.random() * 1000;
        await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
        // Keep at least one daemon alive: a replacement may still be starting on a loaded machine.
        const candidates = fleet.running.filter((d) => d.daemonId !== '');
        if (candidates.length < 2) continue;
        // Adversarial: kill a daemon that holds requests when there is one (one usually holds them all).
        const holding: DaemonProcess[] = [];
        for (const d of candidates) if ((await heldBy(d.daemonId)) > 0) holding.push(d);
        const pool = holding.length > 0 ? holding : candidates;
        const victim = pool[Math.floor(Math.random() * pool.length)]!;
        if (process.env.CHAOS_DEBUG) {
          const { rows: dist } = await db.pool.query(
            `SELECT daemon_id, state, count(*)::int AS n FROM ${db.schema}.requests WHERE state IN ('claimed', 'processing') GROUP BY 1, 2`,
          );
          console.log('victim', victim.daemonId, JSON.stringify(dist), 'mock', mock.inFlight.total);
        }
        victim.kill('SIGKILL');
        lastKill = Date.now();
        await victim.exited;
        const kill: Kill = {
          at: Date.now() - started,
          held: await heldBy(victim.daemonId),
          recoveredMs: null,
        };
        kills.push(kill);
        const killedAt = Date.now();
        recoveries.push(
          waitFor(async () => (await heldBy(victim.daemonId)) === 0, 30_000, 50).then(() => {
            kill.recoveredMs = Date.now() - killedAt;
          }),
        );
        starting.push(fleet.start());
      }
      await Promise.all(starting);
      await Promise.all(recoveries);
      const status = await waitFor(
        async () => {
          const s = await manager.getBatchStatus(batchId);
          return s.finishedAt !== null ? s : null;
        },
        120_000,
        200,
      );
      const elapsed = Date.now() - started;

      // Every request completed, once, and nothing is left pending or in flight.
      expect(status).toMatchObject({ status: 'completed', completedRequests: REQUESTS, failedRequests: 0 });
      const { rows } = await db.pool.query(
        `SELECT state, count(*)::int AS n, count(DISTINCT template_id)::int AS templates,
                sum(attempt)::int AS attempts, count(*) FILTER (WHERE response_status = 200)::int AS ok
           FROM ${db.schema}.requests WHERE batch_id = $1 GROUP BY state`,
        [batchId],
      );
      expect(rows).toEqual([
        { state: 'completed', n: REQUESTS, templates: REQUESTS, attempts: expect.any(Number), ok: REQUESTS },
      ]);

      // The upstream saw every request, never more than the limit at once, and few twice.
      const counts = [...mock.countsByCustomId.entries()].filter(([id]) => id.startsWith('c-'));
      expect(counts).toHaveLength(REQUESTS);
      const duplicates = counts.reduce((sum, [, n]) => sum + (n - 1), 0);
      const heldAtKills = kills.reduce((sum, k) => sum + k.held, 0);
      const maxInFlight = mock.maxInFlight.byModel.get(MODEL) ?? 0;
      const recovered = kills.map((k) => k.recoveredMs ?? Number.NaN);
      console.log(
        JSON.stringify({
          scenario: 'sigkill-loop',
          requests: REQUESTS,
          daemonsStarted: fleet.all.length,
          kills: kills.length,
          heldAtKills,
          duplicates,
          maxInFlight,
          elapsedMs: elapsed,
          reclaimMsMax: Math.max(...recovered),
          reclaimMsMean: Math.round(recovered.reduce((a, b) => a + b, 0) / recovered.length),
        }),
      );
      // The upstream key never reached the daemons' output.
      expect(fleet.logs()).not.toContain(SECRET);
      expect(maxInFlight).toBeLessThanOrEqual(LIMIT);
      expect(maxInFlight).toBeGreaterThan(LIMIT / 2);
      // One kill every 1–2 s while two daemons are up; slow restarts on a loaded 2-core machine
      // can stretch the gaps a lot (4 kills in 30 s at load average 12); the figures are reported.
      expect(kills.length).toBeGreaterThanOrEqual(Math.floor(CHAOS_MS / 10_000));
      expect(duplicates).toBeLessThanOrEqual(heldAtKills);
      // The database's attempt counter accounts for every send (reclaimed rows keep their attempt).
      expect(rows[0].attempts - REQUESTS).toBeGreaterThanOrEqual(duplicates);
    },
    CHAOS_MS + 150_000,
  );
});
