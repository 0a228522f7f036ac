import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { takeLivenessLockSql } from '../../src/db/sql/queue/liveness.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const quiet = { logger: () => {} };

async function rowsOf(batchId: string) {
  const { rows } = await db.pool.query(
    `SELECT state, attempt, daemon_id, upstream_request_id, completed_at FROM ${db.schema}.requests
      WHERE batch_id = $1 ORDER BY line_number`,
    [batchId],
  );
  return rows;
}

describe('crash recovery', () => {
  it('requests of a daemon killed mid-request (SIGKILL) are reclaimed by its lost liveness lock and finished by another', async () => {
    mock.setBehaviour((req) =>
      req.customId?.startsWith('kill-') && req.attemptNo === 1 ? { kind: 'hang' } : { kind: 'ok' },
    );
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/daemon/fixtures/child-daemon.ts'], {
      cwd: process.cwd(),
      env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, SCHEMA: db.schema },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const ready = await new Promise<string>((resolve, reject) => {
        const lines = createInterface({ input: child.stdout! });
        lines.on('line', (line) => line.startsWith('ready ') && resolve(line.slice(6)));
        child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
      });
      const m = db.manager();
      const batchId = await createBatch(m, mockTemplates(mock, 5, { prefix: 'kill-' }));
      await waitFor(async () => (await rowsOf(batchId)).every((r) => r.state === 'processing'), 10_000);
      expect((await rowsOf(batchId))[0].daemon_id).toBe(ready);
      // Kill it once the requests are really at the upstream (mid-request).
      await waitFor(() => mock.requests.filter((r) => r.customId?.startsWith('kill-')).length === 5, 10_000);
      child.kill('SIGKILL');
      // Its heartbeat would take an hour to count as stale: only the liveness lock, released by
      // PostgreSQL with the killed daemon's session, can tell the survivor (src/db/sql/liveness.ts).
      const survivor = await db
        .manager({ ...quiet, deadDaemonAfterMs: 3_600_000, shutdownGraceMs: 100 })
        .run();
      try {
        const status = await waitForBatchEnd(m, batchId, 60_000);
        expect(status.completedRequests).toBe(5);
        for (const r of await rowsOf(batchId))
          expect(r).toMatchObject({ attempt: 2, daemon_id: survivor.id });
        const { rows } = await db.pool.query(`SELECT stopped_at FROM ${db.schema}.daemons WHERE id = $1`, [
          ready,
        ]);
        expect(rows[0].stopped_at).not.toBeNull();
      } finally {
        await survivor.stop();
      }
    } finally {
      child.kill('SIGKILL');
      mock.setBehaviour(null);
    }
  });

  it('a stale daemon (heartbeat stopped, then resumed) cannot overwrite rows that moved on', async () => {
    // The stale daemon's first attempts are held at the upstream until the test lets them answer,
    // after another daemon has reclaimed and finished the rows: no race with the clock.
    let releaseFirst!: () => void;
    const firstAttemptsMayAnswer = new Promise<void>((resolve) => {
      releaseFirst = resolve;
    });
    mock.setBehaviour(async (req) => {
      if (req.customId?.startsWith('stale-') && req.attemptNo === 1) {
        await firstAttemptsMayAnswer;
      }
      return { kind: 'ok' };
    });
    const registry = new Registry();
    // Its heartbeat never runs after registration, so others soon see it as dead. A really stale
    // daemon (paused, cut off) claims nothing either; this in-process stand-in keeps running, so its
    // limiter stops it from claiming once its first three attempts have arrived (they hang, or are
    // aborted when its rebalance finds its budget released: budget.ts). Otherwise it would take the
    // reclaimed rows back under its stale heartbeat and the others would reclaim them again, making
    // the attempt count depend on timing.
    const arrived = () => [...mock.countsByCustomId.keys()].filter((id) => id.startsWith('stale-')).length;
    const stale = await db
      .manager({
        ...quiet,
        heartbeatIntervalMs: 3_600_000,
        deadDaemonAfterMs: 3_600_000,
        metricsRegistry: registry,
        limiter: {
          want: (_model, inFlight) => (arrived() >= 3 ? 0 : Math.max(0, 3 - inFlight)),
          onOutcome: () => {},
        },
      })
      .run();
    try {
      const m = db.manager();
      const batchId = await createBatch(m, mockTemplates(mock, 3, { prefix: 'stale-' }));
      // Counted on arrival (the records are written once an answer is decided).
      await waitFor(() => arrived() === 3, 30_000);
      const other = await db
        .manager({ ...quiet, deadDaemonAfterMs: 800, heartbeatIntervalMs: 100, shutdownGraceMs: 100 })
        .run();
      try {
        await waitForBatchEnd(m, batchId, 60_000);
        const settled = await rowsOf(batchId);
        for (const r of settled) expect(r).toMatchObject({ state: 'completed', attempt: 2 });
        // The stale daemon's first attempts now answer, unless its rebalance found its budget released
        // and aborted them (its hand-backs); its writes must be refused either way.
        releaseFirst();
        await waitFor(
          () =>
            mock.requests.filter((r) => r.customId?.startsWith('stale-') && r.attemptNo === 1 && r.endedAt)
              .length === 3,
          30_000,
        );
        await waitFor(async () => {
          const metric = await registry.getSingleMetric('fusillade_stale_writes_total')?.get();
          return (metric?.values.reduce((a, v) => a + v.value, 0) ?? 0) >= 3;
        }, 30_000);
        expect(await rowsOf(batchId)).toEqual(settled);
      } finally {
        await other.stop();
      }
    } finally {
      releaseFirst();
      await stale.stop();
      mock.setBehaviour(null);
    }
  });

  it('survives its database connections being terminated and resumes', async () => {
    const app = `fus_daemon_test_${db.schema}`;
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 6, application_name: app });
    // No poll within the test: after the cut, only the re-established LISTEN connection can start the
    // second batch.
    const m = new PostgresRequestManager(pool, { schema: db.schema, ...quiet, pollIntervalMs: 3_600_000 });
    mock.setLatency(20);
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, mockTemplates(mock, 300, { prefix: 'term-', model: 'term' }));
      await waitFor(async () => (await m.getBatchStatus(batchId)).completedRequests >= 50, 60_000);
      const killed = await db.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
        [app],
      );
      expect(killed.rowCount).toBeGreaterThan(0);
      const status = await waitForBatchEnd(db.manager(), batchId, 60_000);
      expect(status.completedRequests).toBe(300);
      // The LISTEN connection is back (its last statement is the LISTEN, or the liveness lock taken
      // after it: a terminated session may hold the lock a little longer) …
      await waitFor(async () => {
        const { rows } = await db.pool.query(
          `SELECT 1 FROM pg_stat_activity
            WHERE application_name = $1 AND (query LIKE 'LISTEN%' OR query = $2)`,
          [app, takeLivenessLockSql],
        );
        return rows.length > 0;
      }, 60_000);
      // … and a new batch's notification wakes the daemon (its poll would take an hour).
      const next = await createBatch(
        db.manager(),
        mockTemplates(mock, 1, { prefix: 'after-', model: 'term' }),
      );
      await waitForBatchEnd(db.manager(), next, 60_000);
    } finally {
      mock.setLatency(0);
      await daemon.stop();
      await pool.end();
    }
  });
});
