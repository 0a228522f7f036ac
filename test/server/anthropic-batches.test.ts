import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { startTestServer, type TestServer } from './support.js';

/**
 * Anthropic's Message Batches API driven by @anthropic-ai/sdk unchanged, with the real daemon
 * in-process and the mock upstream answering /v1/messages.
 */

const UPSTREAM_KEY = 'sk-ant-upstream-secret-0123456789';
let mock: MockUpstream;
let t: TestServer;
let alice: Anthropic;
let bob: Anthropic;

const client = (apiKey: string) => new Anthropic({ apiKey, baseURL: t.server.url, maxRetries: 0 });

beforeAll(async () => {
  mock = await startMockUpstream();
  t = await startTestServer({
    daemon: true,
    routing: {
      upstream: mock.url,
      upstreamApiKey: UPSTREAM_KEY,
      // One in flight at a time for the batch the cancel test holds: the rest stay pending.
      models: { 'claude-held': { limit: 1 } },
    },
    daemonConfig: { pollIntervalMs: 100, backoffMs: 10, maxBackoffMs: 50, maxRetries: 2 },
  });
  alice = client(t.aliceKey);
  bob = client(t.bobKey);
});
afterAll(async () => {
  await t?.close();
  await mock?.close();
});

function request(customId: string, model = 'claude-test', text = `hello ${customId}`) {
  return {
    custom_id: customId,
    params: { model, max_tokens: 64, messages: [{ role: 'user' as const, content: text }] },
  };
}

/** Waits for a condition; the deadline only turns a hang into a failure. */
async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ended = (c: Anthropic, id: string) =>
  until(`${id} to end`, async () => {
    const b = await c.messages.batches.retrieve(id);
    return b.processing_status === 'ended' ? b : undefined;
  });

async function results(c: Anthropic, id: string) {
  const out: Anthropic.Messages.MessageBatchIndividualResponse[] = [];
  for await (const line of await c.messages.batches.results(id)) out.push(line);
  return out;
}

describe('Message Batches API through @anthropic-ai/sdk', () => {
  it('creates, runs to ended and serves results: upstream 400 errored, 429 then 200 succeeded', async () => {
    mock.setBehaviour((req) => {
      if (req.body.includes('"hello bad"')) {
        return {
          kind: 'status',
          status: 400,
          body: { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens too large' } },
        };
      }
      if (req.body.includes('"hello limited"') && req.attemptNo === 1) {
        return {
          kind: 'status',
          status: 429,
          body: { type: 'error', error: { type: 'rate_limit_error', message: 'slow down' } },
          headers: { 'retry-after': '0' },
        };
      }
      return { kind: 'ok' };
    });
    const ids = ['a-1', 'a-2', 'a-3', 'bad', 'limited'];
    const created = await alice.messages.batches.create({ requests: ids.map((id) => request(id)) });
    expect(created.id).toMatch(/^msgbatch_[0-9a-f]{32}$/);
    expect(created.type).toBe('message_batch');
    expect(['in_progress', 'ended']).toContain(created.processing_status);
    expect(created.results_url === null).toBe(created.processing_status !== 'ended');
    expect(Date.parse(created.expires_at) - Date.parse(created.created_at)).toBe(24 * 3600 * 1000);

    const batch = await ended(alice, created.id);
    expect(batch.request_counts).toEqual({
      processing: 0,
      succeeded: 4,
      errored: 1,
      canceled: 0,
      expired: 0,
    });
    expect(batch.ended_at).not.toBeNull();
    expect(batch.results_url).toBe(`${t.server.url}/v1/messages/batches/${created.id}/results`);

    const lines = await results(alice, created.id);
    expect(lines.map((l) => l.custom_id).sort()).toEqual([...ids].sort());
    const byId = new Map(lines.map((l) => [l.custom_id, l.result]));
    expect(byId.get('bad')).toEqual({
      type: 'errored',
      error: { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens too large' } },
    });
    const limited = byId.get('limited');
    expect(limited?.type).toBe('succeeded');
    if (limited?.type === 'succeeded')
      expect(limited.message).toMatchObject({ type: 'message', role: 'assistant' });
    expect(mock.countsByCustomId.get('limited')).toBe(2);

    // The upstream saw Anthropic's headers with the upstream key, never the client's key.
    const sent = mock.requests.filter((r) => r.path === '/v1/messages');
    expect(sent.length).toBeGreaterThanOrEqual(ids.length + 1);
    for (const r of sent) {
      expect(r.headers['x-api-key']).toBe(UPSTREAM_KEY);
      expect(r.headers['anthropic-version']).toBe('2023-06-01');
      expect(r.headers.authorization).toBeUndefined();
      expect(JSON.stringify(r.headers)).not.toContain(t.aliceKey);
    }
  });

  it("answers 404 in Anthropic's envelope for another owner's batch", async () => {
    mock.setBehaviour(null);
    const created = await alice.messages.batches.create({ requests: [request('x-1')] });
    await ended(alice, created.id);
    const attempts = [
      () => bob.messages.batches.retrieve(created.id),
      () => bob.messages.batches.cancel(created.id),
      () => bob.messages.batches.delete(created.id),
      () => bob.messages.batches.results(created.id),
    ];
    for (const attempt of attempts) {
      const err = await attempt().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Anthropic.NotFoundError);
      expect((err as InstanceType<typeof Anthropic.NotFoundError>).error).toMatchObject({
        type: 'error',
        error: { type: 'not_found_error' },
      });
    }
    const bobs = [];
    for await (const b of bob.messages.batches.list()) bobs.push(b.id);
    expect(bobs).not.toContain(created.id);
  });

  it('lists with cursor pagination, both ways', async () => {
    const mine: string[] = [];
    for (let i = 0; i < 3; i++) {
      mine.push((await alice.messages.batches.create({ requests: [request(`p-${i}`)] })).id);
    }
    const seen: string[] = [];
    for await (const b of alice.messages.batches.list({ limit: 2 })) seen.push(b.id);
    // Newest first, every batch once.
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.slice(0, 3)).toEqual([...mine].reverse());
    const first = await alice.messages.batches.list({ limit: 2 });
    expect(first.has_more).toBe(true);
    expect(first.first_id).toBe(mine[2]);
    expect(first.last_id).toBe(mine[1]);
    // before_id pages towards newer batches: the one just before mine[0] is mine[1].
    const newer = await alice.messages.batches.list({ limit: 1, before_id: mine[0]! });
    expect(newer.data.map((b) => b.id)).toEqual([mine[1]]);
    expect(newer.has_more).toBe(true);
    const newest = await alice.messages.batches.list({ limit: 5, before_id: mine[1]! });
    expect(newest.data.map((b) => b.id)).toEqual([mine[2]]);
    expect(newest.has_more).toBe(false);
  });

  it('cancels a running batch (in-flight aborted, the rest canceled) and deletes it once ended', async () => {
    mock.setBehaviour((req) => (req.model === 'claude-held' ? { kind: 'hang' } : { kind: 'ok' }));
    const ids = Array.from({ length: 4 }, (_, i) => `held-${i}`);
    const created = await alice.messages.batches.create({
      requests: ids.map((id) => request(id, 'claude-held')),
    });
    const held = await until('a request in flight at the mock', async () =>
      mock.requests.find((r) => r.model === 'claude-held'),
    );
    const refused = await alice.messages.batches.delete(created.id).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);

    const canceling = await alice.messages.batches.cancel(created.id);
    expect(['canceling', 'ended']).toContain(canceling.processing_status);
    expect(canceling.cancel_initiated_at).not.toBeNull();
    const batch = await ended(alice, created.id);
    expect(batch.request_counts).toEqual({
      processing: 0,
      succeeded: 0,
      errored: 0,
      canceled: 4,
      expired: 0,
    });
    await until('the held request to be aborted', async () => (held.endedAt !== null ? true : undefined));
    expect(mock.requests.filter((r) => r.model === 'claude-held')).toHaveLength(1);
    const lines = await results(alice, created.id);
    expect(lines.map((l) => l.result)).toEqual(ids.map(() => ({ type: 'canceled' })));

    const deleted = await alice.messages.batches.delete(created.id);
    expect(deleted).toEqual({ id: created.id, type: 'message_batch_deleted' });
    await expect(alice.messages.batches.retrieve(created.id)).rejects.toBeInstanceOf(Anthropic.NotFoundError);
  });

  it("refuses bad input in Anthropic's envelope, and a missing key with 401", async () => {
    const bad = [
      { requests: [] },
      { requests: [{ custom_id: 'has space', params: request('x').params }] },
      { requests: [{ custom_id: 'x'.repeat(65), params: request('x').params }] },
      { requests: [request('dup'), request('dup')] },
      { requests: [{ custom_id: 'no-params' }] },
      { requests: [request('unknown', '')] },
    ];
    for (const body of bad) {
      const err = await alice.messages.batches.create(body as never).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Anthropic.BadRequestError);
      expect((err as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringMatching(/^requests(\.\d+)?[.:]/) },
      });
    }
    const stranger = client('sk-not-a-key');
    await expect(stranger.messages.batches.list()).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    // Bearer works too, as for the OpenAI routes.
    const res = await fetch(`${t.server.url}/v1/messages/batches?limit=1`, {
      headers: { authorization: `Bearer ${t.aliceKey}`, 'anthropic-version': '2023-06-01' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ has_more: true });
  });

  it('errored results carry an Anthropic error for any failure; expired requests read expired', async () => {
    mock.setBehaviour((req) => {
      if (req.body.includes('"hello e-openai"')) {
        return { kind: 'status', status: 400, body: { error: { message: 'openai-shaped refusal' } } };
      }
      if (req.body.includes('"hello e-html"'))
        return { kind: 'status', status: 500, body: '<html>down</html>' };
      if (req.body.includes('"hello e-reset"')) return { kind: 'reset' };
      return { kind: 'ok' };
    });
    const created = await alice.messages.batches.create({
      requests: ['e-openai', 'e-html', 'e-reset', 'e-ok'].map((id) => request(id)),
    });
    const batch = await ended(alice, created.id);
    expect(batch.request_counts).toMatchObject({ succeeded: 1, errored: 3 });
    const byId = new Map((await results(alice, created.id)).map((l) => [l.custom_id, l.result]));
    expect(byId.get('e-openai')).toMatchObject({
      type: 'errored',
      error: { type: 'error', error: { type: 'invalid_request_error', message: 'openai-shaped refusal' } },
    });
    expect(byId.get('e-html')).toMatchObject({
      type: 'errored',
      error: { type: 'error', error: { type: 'api_error', message: expect.stringContaining('500') } },
    });
    expect(byId.get('e-reset')).toMatchObject({
      type: 'errored',
      error: { type: 'error', error: { type: 'api_error', message: expect.stringContaining('connection') } },
    });

    // Past its deadline a batch sends nothing more: the held request is aborted, the rest expire.
    mock.setBehaviour((req) => (req.model === 'claude-held' ? { kind: 'hang' } : { kind: 'ok' }));
    const late = await alice.messages.batches.create({
      requests: ['late-0', 'late-1', 'late-2'].map((id) => request(id, 'claude-held')),
    });
    await until('a late request in flight', async () =>
      mock.requests.find(
        (r) => r.customId === 'late-0' || r.customId === 'late-1' || r.customId === 'late-2',
      ),
    );
    await t.db.pool.query(`UPDATE ${t.s}.batches SET expires_at = now() WHERE id = $1`, [
      late.id.replace(/^msgbatch_(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5'),
    ]);
    const expired = await ended(alice, late.id);
    expect(expired.request_counts).toEqual({
      processing: 0,
      succeeded: 0,
      errored: 0,
      canceled: 0,
      expired: 3,
    });
    expect((await results(alice, late.id)).map((l) => l.result)).toEqual([
      { type: 'expired' },
      { type: 'expired' },
      { type: 'expired' },
    ]);
  });

  it('shows message batches in the metrics and the dashboard beside OpenAI ones', async () => {
    const created = await alice.messages.batches.create({ requests: [request('dash-1')] });
    const metrics = await (await fetch(`${t.server.url}/metrics`)).text();
    expect(metrics).toMatch(/fusillade_batches_created_total\{api="anthropic"\} [1-9]/);
    expect(metrics).toMatch(/fusillade_batch_requests_created_total\{api="anthropic"\} [1-9]/);
    const doc = (await (await fetch(`${t.server.url}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/messages/batches', '/v1/messages/batches/{message_batch_id}/results']),
    );
    const res = await fetch(`${t.server.url}/api/dashboard/batches?q=${created.id}`, {
      headers: { authorization: `Bearer ${t.aliceKey}` },
    });
    const list = (await res.json()) as { data: { id: string; endpoint: string }[] };
    expect(list.data.map((b) => [b.id, b.endpoint])).toEqual([
      [created.id.replace('msgbatch_', 'batch_'), '/v1/messages'],
    ]);
  });
});
