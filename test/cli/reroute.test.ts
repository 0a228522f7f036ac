import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createUpstreamRouter } from '../../src/dispatch/upstream-routing.js';
import { keyFingerprint } from '../../src/domain/upstream-route.js';
import type { DaemonHandle } from '../../src/manager/request-manager.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';
import { runCli } from './support/cli.js';

/**
 * Issue 18: a batch's route shown by `fusillade status` and the dashboard's batch JSON (a key's
 * fingerprint, never the key), and `fusillade reroute`, the documented way to move a live batch to
 * another upstream, run as a process.
 */

vi.setConfig({ testTimeout: 180_000 });

const SERVER_KEY = 'sk-route-nobody-serves-0123456789';
let t: TestServer;
let mock: MockUpstream;
let daemon: DaemonHandle | undefined;
beforeAll(async () => {
  mock = await startMockUpstream();
  // No daemon serves this server's upstream: its batches wait.
  t = await startTestServer({ routing: { upstream: 'http://127.0.0.1:9/v1', upstreamApiKey: SERVER_KEY } });
});
afterAll(async () => {
  await daemon?.stop();
  await t?.close();
  await mock?.close();
});

const dbArgs = () => ['--database-url', TEST_DATABASE_URL, '--schema', t.db.schema];

describe('fusillade status, the dashboard and fusillade reroute', () => {
  it('show why a batch waits, and move it to an upstream a daemon serves', async () => {
    const file = await upload(t.alice, jsonl(Array.from({ length: 20 }, (_, i) => chatLine(i + 1))));
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const env = { FUSILLADE_SERVER: t.server.url, FUSILLADE_API_KEY: t.aliceKey };

    const waiting = await runCli(['status', batch.id], { env });
    expect(waiting.code).toBe(0);
    const fp = keyFingerprint(SERVER_KEY);
    expect(waiting.stdout).toContain(
      `upstream http://127.0.0.1:9 (key ${fp})  models gpt-test  WAITING: no running daemon sends there`,
    );
    expect(waiting.stdout).toMatch(
      /error no_daemon_for_upstream: No running daemon sends to http:\/\/127\.0\.0\.1:9/,
    );

    const dash = (await (
      await fetch(`${t.server.url}/api/dashboard/batches/${batch.id}/progress`, {
        headers: { authorization: `Bearer ${t.aliceKey}` },
      })
    ).json()) as { upstreams: unknown[]; errors: { data: { code: string }[] } };
    expect(dash.upstreams).toEqual([
      {
        upstream: 'http://127.0.0.1:9',
        credential: 'key',
        key_fingerprint: fp,
        models: ['gpt-test'],
        daemons: 0,
        waiting: true,
      },
    ]);
    expect(dash.errors.data.map((e) => e.code)).toContain('no_daemon_for_upstream');
    const list = await (
      await fetch(`${t.server.url}/api/dashboard/batches`, {
        headers: { authorization: `Bearer ${t.aliceKey}` },
      })
    ).text();
    expect(list).toContain('"waiting":true');
    for (const text of [waiting.stdout, JSON.stringify(dash), list]) expect(text).not.toContain(SERVER_KEY);

    // Bad ids and unknown batches: one line on stderr, nothing moved.
    const bad = await runCli(['reroute', 'nope', '--upstream', mock.url, ...dbArgs()]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('"nope" is not a batch id');
    const unknown = await runCli(['reroute', `batch_${'0'.repeat(32)}`, '--upstream', mock.url, ...dbArgs()]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/no batch batch_0{32}/);
    const nowhere = await runCli(['reroute', batch.id, ...dbArgs()]);
    expect(nowhere.code).not.toBe(0);
    expect(nowhere.stderr).toMatch(/--upstream/);

    // Moved to the test's mock, with a key given in the environment (as a daemon would hold it).
    const moveEnv = { FUSILLADE_UPSTREAM_API_KEY: 'sk-moved-to-mock-0123456789' };
    const moved = await runCli(['reroute', batch.id, '--upstream', mock.url, ...dbArgs()], { env: moveEnv });
    expect(moved.stderr).toBe('');
    expect(moved.code).toBe(0);
    expect(moved.stdout).toContain(`moved 20 requests of ${batch.id}`);
    expect(moved.stdout).toContain(
      `upstream ${mock.url} (key ${keyFingerprint('sk-moved-to-mock-0123456789')})  models gpt-test  WAITING`,
    );
    expect(moved.stdout).not.toContain('sk-moved-to-mock');
    expect(mock.requests).toHaveLength(0);

    // A daemon serving that upstream with that key sends all of it there.
    daemon = await t.db
      .manager({
        logger: () => {},
        pollIntervalMs: 100,
        upstreamRouter: createUpstreamRouter({
          upstream: mock.url,
          upstreamApiKey: 'sk-moved-to-mock-0123456789',
        }),
      })
      .run();
    const done = await waitFor(async () => {
      const b = await t.alice.batches.retrieve(batch.id);
      return b.status === 'completed' ? b : null;
    });
    expect(done.request_counts).toEqual({ total: 20, completed: 20, failed: 0 });
    expect(done.errors).toBeNull();
    expect(new Set(mock.requests.map((r) => r.customId))).toHaveProperty('size', 20);
    const after = await runCli(['status', batch.id], { env });
    expect(after.stdout).toMatch(/models gpt-test {2}1 daemon can send/);
  });
});
