import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, waitFor } from '../support/mock-upstream.js';
import { DaemonFleet, type DaemonProcess, taggedUrl, uniqueTag } from './support/daemons.js';

/**
 * Chaos: three `fusillade daemon` processes share one schema and one model limit of 16. Every 1.5 s
 * one of them is SIGKILLed and a new one started, for 30 s, while thousands of requests run against
 * a loopback mock with 40–80 ms of latency. The daemons' heartbeat would take 30 s to go stale: the
 * others learn of each kill from its liveness lock, released by PostgreSQL with the dead session
 * (src/db/sql/queue/liveness.ts).
 *
 * At the end every request is completed exactly once in the database, none is lost or stuck, the
 * upstream never saw more than 16 at once, and requests sent twice are at most those the killed
 * daemons held at the kills, and each of those is sent again by another daemon unless the killed
 * daemon's own result write completed it (ownWrites). Reported (not asserted: the suite runs on
 * loaded machines): how soon each killed daemon's rows were sent again, and how soon after the last
 * kill every row the killed daemons held was completed (RELIABILITY.md).
 */

const MODEL = 'gpt-chaos';
const LIMIT = 16;
const REQUESTS = Number(process.env.CHAOS_REQUESTS ?? 6000);
const CHAOS_MS = Number(process.env.CHAOS_MS ?? 30_000);
const KILL_EVERY_MS = 1500;
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
      // The defaults: a killed daemon's heartbeat counts as stale only after 30 s.
      heartbeatIntervalMs: 5000,
      deadDaemonAfterMs: 30_000,
      pollIntervalMs: 250,
      requestTimeoutMs: 10_000,
      leaseMs: 120_000,
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
  daemonId: string;
  /** custom_id → times the mock had seen it once the daemon had exited (before the held rows were read). */
  held: Map<string, number>;
  /**
   * ms until every held row had been sent again by another daemon or completed by the killed
   * daemon's own result write (see ownWrites).
   */
  resentMs: number | null;
  /** Held rows that were neither sent again nor completed by the killed daemon within the wait. */
  unresent: string[];
}

/**
 * A daemon killed with its result write on the wire: PostgreSQL runs the statement it had already
 * received and commits it (the row is still this daemon's, its guard holds), so such a row reads
 * held when the test looks and is then completed by the dead daemon itself, never sent again. It
 * keeps that daemon's id; a row sent again is claimed (and completed) under another daemon's id.
 */
async function ownWrites(daemonId: string, customIds: string[]): Promise<Set<string>> {
  const { rows } = await db.pool.query(
    `SELECT t.custom_id FROM ${db.schema}.requests r JOIN ${db.schema}.request_templates t ON t.id = r.template_id
      WHERE t.custom_id = ANY($1) AND r.state = 'completed' AND r.daemon_id = $2`,
    [customIds, daemonId],
  );
  return new Set(rows.map((r) => r.custom_id as string));
}

/** The rows a daemon holds (claimed or in flight) by custom id. */
async function heldBy(daemonId: string): Promise<string[]> {
  const { rows } = await db.pool.query(
    `SELECT t.custom_id FROM ${db.schema}.requests r JOIN ${db.schema}.request_templates t ON t.id = r.template_id
      WHERE r.daemon_id = $1 AND r.state IN ('claimed', 'processing')`,
    [daemonId],
  );
  return rows.map((r) => r.custom_id as string);
}

async function completedOf(customIds: string[]): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM ${db.schema}.requests r JOIN ${db.schema}.request_templates t ON t.id = r.template_id
      WHERE t.custom_id = ANY($1) AND r.state = 'completed'`,
    [customIds],
  );
  return rows[0].n;
}

/**
 * What a failed wait needs to be read: the rows it waited for (state, owner, lease, attempt, and how
 * often the mock saw them), every daemon's row and whether its liveness lock is held, the budgets,
 * the kills, and the daemons' warnings.
 */
async function stuckReport(customIds: string[], kills: Kill[], started: number): Promise<string> {
  const rows = await db.pool.query(
    `SELECT t.custom_id, r.state, r.daemon_id, r.attempt, r.claimed_at, r.lease_expires_at, r.not_before,
            r.error_code, r.completed_at, now() AS now
       FROM ${db.schema}.requests r JOIN ${db.schema}.request_templates t ON t.id = r.template_id
      WHERE t.custom_id = ANY($1)`,
    [customIds],
  );
  const daemons = await db.pool.query(
    `SELECT d.id, d.pid, d.started_at, d.heartbeat_at, d.stopped_at, d.liveness_key,
            EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                       AND ((l.classid::bigint << 32) | l.objid::bigint) = d.liveness_key) AS lock_held
       FROM ${db.schema}.daemons d ORDER BY d.started_at`,
  );
  const budgets = await db.pool.query(`SELECT * FROM ${db.schema}.model_budgets ORDER BY daemon_id`);
  const warnings = fleet
    .logs()
    .split('\n')
    .filter((l) => /declared lost|reclaimed|released|refused|failed|lost/.test(l))
    .slice(-60);
  return JSON.stringify(
    {
      rows: rows.rows.map((r) => ({ ...r, sentTimes: mock.countsByCustomId.get(r.custom_id) ?? 0 })),
      daemons: daemons.rows,
      budgets: budgets.rows,
      kills: kills.map((k) => ({
        at: k.at,
        daemonId: k.daemonId,
        held: Object.fromEntries(k.held),
        resentMs: k.resentMs,
        unresent: k.unresent,
      })),
      startedAt: new Date(started).toISOString(),
      warnings,
    },
    null,
    1,
  );
}

describe('chaos: SIGKILL daemons in a loop', () => {
  it(
    'completes every request exactly once under repeated SIGKILL, within the global limit',
    async () => {
      const manager = db.manager({ upstreamRouter: fleet.router() });
      await Promise.all([fleet.start(), fleet.start(), fleet.start()]);
      const templates = Array.from({ length: REQUESTS }, (_, i) => ({
        endpoint: 'http://127.0.0.1:9', // the batch is routed by the fleet's routing: the mock, its key
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
      const resends: Promise<void>[] = [];
      const starting: Promise<DaemonProcess>[] = [];
      let lastKill = Date.now();
      while (Date.now() - started < CHAOS_MS) {
        const due = lastKill + KILL_EVERY_MS;
        await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
        // Keep at least one daemon alive: a replacement may still be starting on a loaded machine.
        const candidates = fleet.running.filter((d) => d.daemonId !== '');
        if (candidates.length < 2) continue;
        // Adversarial: kill a daemon that holds requests when there is one.
        const holding: DaemonProcess[] = [];
        for (const d of candidates) if ((await heldBy(d.daemonId)).length > 0) holding.push(d);
        const pool = holding.length > 0 ? holding : candidates;
        const victim = pool[Math.floor(Math.random() * pool.length)]!;
        victim.kill('SIGKILL');
        lastKill = Date.now();
        await victim.exited;
        // The mock's counts before the held rows are read: a row sent again meanwhile was reclaimed
        // first, so it is no longer held, and a resend after this copy counts as one.
        const seen = new Map(mock.countsByCustomId);
        const ids = await heldBy(victim.daemonId);
        const kill: Kill = {
          at: lastKill - started,
          daemonId: victim.daemonId,
          held: new Map(ids.map((id) => [id, seen.get(id) ?? 0])),
          resentMs: null,
          unresent: [],
        };
        kills.push(kill);
        const killedAt = lastKill;
        let ownChecked = 0;
        let own = new Set<string>();
        const waiting = () =>
          [...kill.held]
            .filter(([id, n]) => (mock.countsByCustomId.get(id) ?? 0) <= n && !own.has(id))
            .map(([id]) => id);
        resends.push(
          waitFor(
            async () => {
              if (waiting().length === 0) return true;
              // The database is asked at most every 200 ms; the mock's counts at every step.
              if (Date.now() - ownChecked < 200) return false;
              ownChecked = Date.now();
              own = await ownWrites(kill.daemonId, waiting());
              return waiting().length === 0;
            },
            120_000,
            10,
          ).then(
            () => {
              kill.resentMs = Date.now() - killedAt;
            },
            () => {
              kill.unresent = waiting();
            },
          ),
        );
        starting.push(fleet.start());
      }
      const heldByKilled = [...new Set(kills.flatMap((k) => [...k.held.keys()]))];
      // Settled: every row a killed daemon held has been completed (by another daemon, or by the
      // killed one's own last write).
      await waitFor(async () => (await completedOf(heldByKilled)) === heldByKilled.length, 120_000, 20).catch(
        async (err) => {
          console.log(await stuckReport(heldByKilled, kills, started));
          throw err;
        },
      );
      const settledAfterLastKillMs = Date.now() - lastKill;
      await Promise.all(resends);
      const unresent = kills.flatMap((k) => k.unresent);
      if (unresent.length > 0) console.log(await stuckReport(unresent, kills, started));
      // Every held row was sent again by another daemon, unless the killed one's own write completed it.
      expect(unresent).toEqual([]);
      await Promise.all(starting);
      const status = await waitFor(
        async () => {
          const s = await manager.getBatchStatus(batchId);
          return s.finishedAt !== null ? s : null;
        },
        300_000,
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
      const heldAtKills = kills.reduce((sum, k) => sum + k.held.size, 0);
      const maxInFlight = mock.maxInFlight.byModel.get(MODEL) ?? 0;
      const resent = kills.filter((k) => k.held.size > 0).map((k) => k.resentMs ?? Number.NaN);
      let completedByKilled = 0;
      for (const k of kills) completedByKilled += (await ownWrites(k.daemonId, [...k.held.keys()])).size;
      console.log(
        JSON.stringify({
          scenario: 'sigkill-loop',
          requests: REQUESTS,
          daemonsStarted: fleet.all.length,
          kills: kills.length,
          killsHolding: resent.length,
          heldAtKills,
          completedByKilled,
          duplicates,
          maxInFlight,
          elapsedMs: elapsed,
          resentMsMax: Math.max(...resent),
          resentMsMean: Math.round(resent.reduce((a, b) => a + b, 0) / resent.length),
          resentWithin3s: resent.filter((ms) => ms <= 3000).length,
          settledAfterLastKillMs,
        }),
      );
      // The upstream key never reached the daemons' output.
      expect(fleet.logs()).not.toContain(SECRET);
      expect(maxInFlight).toBeLessThanOrEqual(LIMIT);
      expect(maxInFlight).toBeGreaterThan(LIMIT / 2);
      // The killed daemons were declared lost by their liveness locks, long before any heartbeat
      // could go stale (the figures above say how soon).
      expect(fleet.logs()).toContain('declared lost');
      expect(kills.length).toBeGreaterThanOrEqual(2);
      expect(duplicates).toBeLessThanOrEqual(heldAtKills);
      // The database's attempt counter accounts for every send (reclaimed rows keep their attempt).
      expect(rows[0].attempts - REQUESTS).toBeGreaterThanOrEqual(duplicates);
    },
    CHAOS_MS + 600_000,
  );
});
