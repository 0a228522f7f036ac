import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createApiKey, revokeApiKey } from '../../src/store/api-keys.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';
import { NO_BATCH, NO_FILE, Recorder, withoutIds, ZERO_UUID } from './support.js';

/**
 * Keys and owners: every /v1 route and every /api/dashboard/* data route needs a valid, unrevoked
 * key; another owner's ids answer exactly like ids that do not exist; lists never mix owners.
 */

let mock: MockUpstream;
let t: TestServer;
let http: Recorder;
/** Alice's objects, made once: an input file, a finished batch with output and error files. */
const alice = { file: '', batch: '', output: '', errors: '', requestUuid: '' };

beforeAll(async () => {
  mock = await startMockUpstream();
  mock.setBehaviour((req) =>
    req.body.includes('"fail me"')
      ? { kind: 'status', status: 400, body: { error: { message: 'bad' } } }
      : { kind: 'ok' },
  );
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1`, upstreamApiKey: 'sk-access-test' },
    daemonConfig: { pollIntervalMs: 100, maxRetries: 0, logger: () => {} },
  });
  http = new Recorder(t);
  const file = await upload(
    t.alice,
    jsonl([
      chatLine(1),
      chatLine(2, { body: { model: 'gpt-test', messages: [{ role: 'user', content: 'fail me' }] } }),
    ]),
  );
  const batch = await t.alice.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  const done = await waitFor(async () => {
    const b = await t.alice.batches.retrieve(batch.id);
    return b.status === 'completed' ? b : null;
  });
  alice.file = file.id;
  alice.batch = batch.id;
  alice.output = done.output_file_id!;
  alice.errors = done.error_file_id!;
  const reqs = await http.call('GET', `/api/dashboard/batches/${batch.id}/requests`, { key: t.aliceKey });
  alice.requestUuid = (reqs.json as { data: { id: string }[] }).data[0]!.id;
});

afterAll(async () => {
  await t?.close();
  await mock?.close();
});

/** Every data route, with a given owner's ids filled in. */
function routes(ids: { file: string; batch: string; request: string }): [string, string, unknown?][] {
  return [
    ['GET', '/v1/files'],
    ['POST', '/v1/files'],
    ['GET', `/v1/files/${ids.file}`],
    ['GET', `/v1/files/${ids.file}/content`],
    ['DELETE', `/v1/files/${ids.file}`],
    ['GET', '/v1/batches'],
    [
      'POST',
      '/v1/batches',
      { input_file_id: ids.file, endpoint: '/v1/chat/completions', completion_window: '24h' },
    ],
    ['GET', `/v1/batches/${ids.batch}`],
    ['POST', `/v1/batches/${ids.batch}/cancel`],
    ['GET', '/v1/nowhere'],
    ['GET', '/api/dashboard/me'],
    ['GET', '/api/dashboard/batches'],
    ['GET', `/api/dashboard/batches/${ids.batch}/progress`],
    ['GET', `/api/dashboard/batches/${ids.batch}/requests`],
    ['GET', `/api/dashboard/batches/${ids.batch}/requests/${ids.request}`],
    ['POST', `/api/dashboard/batches/${ids.batch}/retry`],
    ['GET', '/api/dashboard/operations'],
  ];
}

async function counts(): Promise<{ files: number; batches: number; cancelled: number }> {
  const { rows } = await t.db.pool.query(
    `SELECT (SELECT count(*)::int FROM ${t.s}.files WHERE deleted_at IS NULL AND purpose = 'batch') AS files,
            (SELECT count(*)::int FROM ${t.s}.batches) AS batches,
            (SELECT count(*)::int FROM ${t.s}.batches WHERE cancelling_at IS NOT NULL) AS cancelled`,
  );
  return rows[0];
}

describe('authentication', () => {
  it('refuses every route without a valid key: missing, malformed, unknown, other scheme', async () => {
    const before = await counts();
    const ids = { file: alice.file, batch: alice.batch, request: alice.requestUuid };
    const bad: (string | undefined)[] = [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      `Basic ${Buffer.from(`x:${t.aliceKey}`).toString('base64')}`,
      `Token ${t.aliceKey}`,
      'Bearer fsk_unknownunknownunknownunknownunknownunknown',
      `Bearer ${t.aliceKey}x`,
      `Bearer ${t.aliceKey.slice(0, -1)}`,
      `Bearer ${t.aliceKey} ${t.bobKey}`,
      `Bearer fsk_${'a'.repeat(5000)}`,
    ];
    for (const [method, path, body] of routes(ids)) {
      for (const auth of bad) {
        const res = await http.call(method, path, {
          ...(auth === undefined ? {} : { auth }),
          ...(body === undefined ? {} : { body }),
        });
        expect(res.status, `${method} ${path} with ${JSON.stringify(auth?.slice(0, 30))}`).toBe(401);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect((res.json as { error: { code: string } }).error.code).toBe('invalid_api_key');
      }
    }
    expect(await counts()).toEqual(before);
  });

  it('stops a revoked key on the very next request, on every route', async () => {
    const carol = await createApiKey(t.db.pool, t.s, { owner: 'carol' });
    const ok = await http.call('GET', '/api/dashboard/me', { key: carol.key });
    expect([ok.status, ok.json]).toEqual([200, { owner: 'carol' }]);
    expect((await http.call('GET', '/v1/files', { key: carol.key })).status).toBe(200);
    await revokeApiKey(t.db.pool, t.s, carol.id);
    for (const [method, path, body] of routes({ file: NO_FILE, batch: NO_BATCH, request: ZERO_UUID })) {
      const res = await http.call(method, path, { key: carol.key, ...(body === undefined ? {} : { body }) });
      expect(res.status, `${method} ${path}`).toBe(401);
    }
  });

  it('serves the static dashboard shell without a key but no data in it', async () => {
    const page = await http.call('GET', '/');
    expect(page.status).toBe(200);
    expect(page.text).not.toContain(alice.batch);
    expect(page.text).not.toContain('alice');
    // Static files never leave the dashboard folder, however the path is spelled.
    for (const path of [
      '/assets/../package.json',
      '/assets/..%2f..%2fpackage.json',
      '/assets/%2e%2e/%2e%2e/package.json',
      '/assets/..%5c..%5cpackage.json',
      '/assets/%2fetc%2fpasswd',
      '/assets/....//....//package.json',
      '/assets/x%00.js',
    ]) {
      const res = await http.call('GET', path);
      expect(res.status, path).toBe(404);
      expect(res.text, path).not.toContain('"devDependencies"');
      expect(res.text, path).not.toContain('root:');
    }
  });
});

describe('owner isolation', () => {
  it("answers another owner's ids exactly like ids that do not exist, and changes nothing", async () => {
    const before = await counts();
    const theirs = routes({ file: alice.file, batch: alice.batch, request: alice.requestUuid });
    const none = routes({ file: NO_FILE, batch: NO_BATCH, request: ZERO_UUID });
    // Routes that name an id (POST /v1/batches names the input file in its body).
    const pairs = theirs
      .map((route, i) => [route, none[i]!] as const)
      .filter(([[, path, body]]) => path.includes('file-') || path.includes('batch_') || body !== undefined);
    // The output and error files are alice's too.
    for (const id of [alice.output, alice.errors]) {
      for (const [method, suffix] of [
        ['GET', ''],
        ['GET', '/content'],
        ['DELETE', ''],
      ] as const) {
        pairs.push([
          [method, `/v1/files/${id}${suffix}`],
          [method, `/v1/files/${NO_FILE}${suffix}`],
        ]);
      }
    }
    expect(pairs.length).toBeGreaterThanOrEqual(16);
    for (const [[method, path, body], [, missingPath, missingBody]] of pairs) {
      const mine = await http.call(method, path, { key: t.bobKey, ...(body === undefined ? {} : { body }) });
      const missing = await http.call(method, missingPath, {
        key: t.bobKey,
        ...(missingBody === undefined ? {} : { body: missingBody }),
      });
      expect(mine.status, `${method} ${path}`).toBe(404);
      expect(withoutIds(mine.text), `${method} ${path}`).toBe(withoutIds(missing.text));
      expect(mine.text).not.toContain('alice');
    }
    // A request id of alice's under a batch id of bob's own is not found either.
    const bobFile = await upload(t.bob, jsonl([chatLine(1)]));
    const bobBatch = await t.bob.batches.create({
      input_file_id: bobFile.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const cross = await http.call(
      'GET',
      `/api/dashboard/batches/${bobBatch.id}/requests/${alice.requestUuid}`,
      {
        key: t.bobKey,
      },
    );
    expect(cross.status).toBe(404);
    expect(cross.text).not.toContain('fail me');
    const after = await counts();
    // Only bob's own input file and batch were added (his output file may come and go with the
    // daemon); nothing of alice's was deleted or cancelled.
    expect(after).toEqual({ ...before, files: before.files + 1, batches: before.batches + 1 });
    // Alice still has everything.
    expect((await t.alice.files.retrieve(alice.file)).id).toBe(alice.file);
    expect((await t.alice.batches.retrieve(alice.batch)).status).toBe('completed');
  });

  it('never mixes owners in lists, searches or pages', async () => {
    const bobFiles = await http.call('GET', '/v1/files?limit=100', { key: t.bobKey });
    const bobBatches = await http.call('GET', '/v1/batches?limit=100', { key: t.bobKey });
    const bobDash = await http.call('GET', '/api/dashboard/batches?limit=100', { key: t.bobKey });
    for (const res of [bobFiles, bobBatches, bobDash]) {
      expect(res.status).toBe(200);
      for (const id of [alice.file, alice.batch, alice.output, alice.errors])
        expect(res.text).not.toContain(id);
    }
    // Searching for alice's batch id, or paging after it, finds nothing of hers.
    const hex = alice.batch.slice('batch_'.length);
    for (const q of [hex, hex.slice(0, 8), alice.batch, 'alice', 'req-1']) {
      const res = await http.call('GET', `/api/dashboard/batches?q=${encodeURIComponent(q)}`, {
        key: t.bobKey,
      });
      expect(res.status).toBe(200);
      expect(res.text).not.toContain(hex);
    }
    for (const path of [
      `/v1/batches?after=${alice.batch}`,
      `/v1/files?after=${alice.file}`,
      `/api/dashboard/batches?after=${alice.batch}`,
    ]) {
      const res = await http.call('GET', path, { key: t.bobKey });
      expect(res.status).toBeLessThan(500);
      expect(res.text).not.toContain(hex);
      expect(res.text).not.toContain(alice.file.slice(5));
    }
    // And alice's own lists hold only hers.
    const aliceBatches = (await http.call('GET', '/v1/batches?limit=100', { key: t.aliceKey })).json as {
      data: { id: string }[];
    };
    expect(aliceBatches.data.map((b) => b.id)).toEqual([alice.batch]);
  });
});

describe('operations page', () => {
  it("shows every owner the daemons, but no other owner's activity or model names", async () => {
    // Alice runs a model whose name is her own (a fine-tune's names its organisation): two requests
    // hang upstream (in flight), two wait behind a limit of 2 (pending).
    const model = 'ft:gpt-test:alice-corp:secret-project';
    await t.server.manager.setModelConcurrency(model, 2);
    mock.setBehaviour((req) => (req.body.includes('"hold me"') ? { kind: 'hang' } : { kind: 'ok' }));
    const line = (i: number, content: string) =>
      chatLine(i, { body: { model, messages: [{ role: 'user', content }] } });
    const file = await upload(
      t.alice,
      jsonl([line(1, 'hold me'), line(2, 'hold me'), line(3, 'later'), line(4, 'later')]),
    );
    const batch = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    type Ops = {
      models: { model: string; in_flight: number; pending: number; limit: number }[];
      dispatch: { series: { model: string; counts: number[] }[] };
      daemons: { id: string; in_flight: number }[];
      queue: { pending: number; ready: number; in_flight: number; live_batches: number };
    };
    try {
      // Alice sees her load once both hung requests are out.
      const mine = await waitFor(async () => {
        const ops = (await http.call('GET', '/api/dashboard/operations', { key: t.aliceKey })).json as Ops;
        return ops.queue.in_flight === 2 ? ops : null;
      });
      expect(mine.models.find((m) => m.model === model)).toEqual({
        model,
        in_flight: 2,
        pending: 2,
        limit: 2,
        rate: null,
      });
      expect(mine.queue).toMatchObject({ pending: 2, in_flight: 2, live_batches: 1 });
      expect(mine.dispatch.series.find((s) => s.model === model)?.counts.at(-1)).toBe(2);
      expect(mine.daemons.reduce((n, d) => n + d.in_flight, 0)).toBe(2);

      // Bob sees the same daemons, and nothing of hers: not the model's name (the daemon seeded a
      // model_limits row for it), not its load, not her requests in the daemons' counts.
      const res = await http.call('GET', '/api/dashboard/operations', { key: t.bobKey });
      expect(res.status).toBe(200);
      const theirs = res.json as Ops;
      expect(res.text).not.toContain('alice');
      expect(res.text).not.toContain('secret-project');
      expect(res.text).not.toContain(batch.id.slice('batch_'.length));
      // Only bob's own model (gpt-test, from his batch made above), with nothing of hers in it.
      for (const m of theirs.models) expect(m).toMatchObject({ model: 'gpt-test', in_flight: 0, pending: 0 });
      for (const s of theirs.dispatch.series) expect(s.model).toBe('gpt-test');
      expect(theirs.queue).toEqual({ pending: 0, ready: 0, in_flight: 0, live_batches: 0 });
      expect(theirs.daemons.map((d) => d.id)).toEqual(mine.daemons.map((d) => d.id));
      expect(theirs.daemons.length).toBeGreaterThan(0);
      expect(theirs.daemons.every((d) => d.in_flight === 0)).toBe(true);
    } finally {
      await t.alice.batches.cancel(batch.id);
      await waitFor(async () =>
        (await t.alice.batches.retrieve(batch.id)).status === 'cancelled' ? 1 : null,
      );
    }
  });
});
