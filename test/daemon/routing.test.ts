import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUpstreamRouter } from '../../src/dispatch/upstream-routing.js';
import { keyFingerprint } from '../../src/domain/upstream-route.js';
import type { DaemonHandle } from '../../src/manager/request-manager.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitFor, waitForBatchEnd } from '../support/mock-upstream.js';

/**
 * Issue 18: a request goes where its batch said when it was created, whichever daemon claims it. Each
 * daemon here has its own manager (as separate processes would) on one schema.
 */
let db: TestDb;
let a: MockUpstream;
let b: MockUpstream;
const running: DaemonHandle[] = [];
beforeAll(async () => {
  db = await createTestDb();
  [a, b] = await Promise.all([startMockUpstream(), startMockUpstream()]);
});
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop()));
  await Promise.all([a.close(), b.close()]);
  await db.close();
});

const quiet = { logger: () => {}, pollIntervalMs: 100, heartbeatIntervalMs: 200 };

function routed(upstream: string, key?: string) {
  return db.manager({
    ...quiet,
    upstreamRouter: createUpstreamRouter(key ? { upstream, upstreamApiKey: key } : { upstream }),
  });
}

async function start(m: ReturnType<typeof routed>): Promise<DaemonHandle> {
  const d = await m.run();
  running.push(d);
  return d;
}

async function stop(d: DaemonHandle): Promise<void> {
  await d.stop();
  running.splice(running.indexOf(d), 1);
}

/** Templates whose own endpoint is nowhere: only the batch's route can make them arrive. */
function nowhere(n: number, prefix: string, model = 'gpt-route') {
  return mockTemplates(a, n, { prefix, model, apiKey: '' }).map((t) => ({
    ...t,
    endpoint: 'http://127.0.0.1:9',
  }));
}

async function daemonsOf(batchId: string): Promise<string[]> {
  const { rows } = await db.pool.query(
    `SELECT DISTINCT daemon_id FROM ${db.schema}.requests WHERE batch_id = $1 AND daemon_id IS NOT NULL`,
    [batchId],
  );
  return rows.map((r) => r.daemon_id);
}

describe('routing is decided when the batch is created', () => {
  it('a daemon with another upstream claims none of a batch; the one with its upstream sends all of it', async () => {
    const toA = routed(a.url);
    const toB = routed(b.url);
    const [dA, dB] = [await start(toA), await start(toB)];
    try {
      const forA = await createBatch(toA, nowhere(60, 'ra-'));
      const forB = await createBatch(toB, nowhere(40, 'rb-'));
      await Promise.all([waitForBatchEnd(toA, forA), waitForBatchEnd(toB, forB)]);
      expect(a.requests.filter((r) => r.customId?.startsWith('ra-'))).toHaveLength(60);
      expect(a.requests.some((r) => r.customId?.startsWith('rb-'))).toBe(false);
      expect(b.requests.filter((r) => r.customId?.startsWith('rb-'))).toHaveLength(40);
      expect(b.requests.some((r) => r.customId?.startsWith('ra-'))).toBe(false);
      expect(await daemonsOf(forA)).toEqual([dA.id]);
      expect(await daemonsOf(forB)).toEqual([dB.id]);
      expect(await toA.getBatchUpstreams(forA)).toEqual([
        {
          upstream: a.url,
          credential: 'none',
          keyFingerprint: null,
          models: ['gpt-route'],
          daemons: 1,
          waiting: false,
        },
      ]);
    } finally {
      await Promise.all([stop(dA), stop(dB)]);
    }
  });

  it('two daemons with the same upstream but different keys do not share work', async () => {
    const one = routed(a.url, 'sk-route-one');
    const two = routed(a.url, 'sk-route-two');
    const [d1, d2] = [await start(one), await start(two)];
    try {
      const b1 = await createBatch(one, nowhere(50, 'k1-'));
      const b2 = await createBatch(two, nowhere(50, 'k2-'));
      await Promise.all([waitForBatchEnd(one, b1), waitForBatchEnd(two, b2)]);
      const auth = (prefix: string) =>
        new Set(a.requests.filter((r) => r.customId?.startsWith(prefix)).map((r) => r.headers.authorization));
      expect(auth('k1-')).toEqual(new Set(['Bearer sk-route-one']));
      expect(auth('k2-')).toEqual(new Set(['Bearer sk-route-two']));
      expect(await daemonsOf(b1)).toEqual([d1.id]);
      expect(await daemonsOf(b2)).toEqual([d2.id]);
      const [up] = await one.getBatchUpstreams(b1);
      expect(up).toMatchObject({ credential: 'key', keyFingerprint: keyFingerprint('sk-route-one') });
      expect(JSON.stringify(up)).not.toContain('sk-route-one');
    } finally {
      await Promise.all([stop(d1), stop(d2)]);
    }
  });

  it("a template's own endpoint and key are where any daemon sends it (the library's contract)", async () => {
    const library = db.manager(quiet); // no router: templates are their own routes
    const elsewhere = routed(b.url, 'sk-not-this-one');
    const d = await start(elsewhere);
    try {
      const batchId = await createBatch(
        library,
        mockTemplates(a, 10, { prefix: 'lib-', apiKey: 'sk-template' }),
      );
      await waitForBatchEnd(library, batchId);
      const sent = a.requests.filter((r) => r.customId?.startsWith('lib-'));
      expect(sent).toHaveLength(10);
      expect(new Set(sent.map((r) => r.headers.authorization))).toEqual(new Set(['Bearer sk-template']));
      expect(b.requests.some((r) => r.customId?.startsWith('lib-'))).toBe(false);
      expect(await library.getBatchUpstreams(batchId)).toMatchObject([
        { upstream: a.url, credential: 'template', keyFingerprint: null, daemons: 1, waiting: false },
      ]);
    } finally {
      await stop(d);
    }
  });

  it('a batch no live daemon can send waits, says so, and moves with rerouteBatch', async () => {
    const creator = routed(a.url, 'sk-nobody-has');
    const other = routed(b.url);
    const d = await start(other);
    try {
      const batchId = await createBatch(creator, nowhere(20, 'wait-'));
      await waitFor(async () => (await creator.getBatchUpstreams(batchId))[0]?.waiting, 5000);
      // Give the daemon every chance to (wrongly) take it: two polls.
      await new Promise((r) => setTimeout(r, 300));
      expect(a.requests.some((r) => r.customId?.startsWith('wait-'))).toBe(false);
      expect(b.requests.some((r) => r.customId?.startsWith('wait-'))).toBe(false);
      expect((await creator.getBatchStatus(batchId)).pendingRequests).toBe(20);

      // Moved to the upstream the running daemon serves: it sends them there.
      expect(await creator.rerouteBatch(batchId, { router: createUpstreamRouter({ upstream: b.url }) })).toBe(
        20,
      );
      await waitForBatchEnd(creator, batchId);
      expect(b.requests.filter((r) => r.customId?.startsWith('wait-'))).toHaveLength(20);
      expect(await creator.getBatchUpstreams(batchId)).toMatchObject([
        { upstream: b.url, credential: 'none' },
      ]);
    } finally {
      await stop(d);
    }
  });
});
