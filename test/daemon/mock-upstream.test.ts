import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';

let mock: MockUpstream;
beforeAll(async () => {
  mock = await startMockUpstream();
});
afterAll(() => mock.close());

/** One request; the abort is a hang guard (a loaded machine may take seconds), unless a test passes less. */
async function post(path: string, model: string, customId: string, timeoutMs = 60_000) {
  const res = await request(`${mock.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-fusillade-custom-id': customId },
    body: JSON.stringify({ model, messages: [] }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

describe('mock upstream', () => {
  it('answers OpenAI-shaped bodies with usage and an x-request-id per endpoint', async () => {
    const chat = await post('/v1/chat/completions', 'm1', 'a');
    expect(chat.status).toBe(200);
    expect(chat.headers['x-request-id']).toMatch(/^req_mock_/);
    expect(JSON.parse(chat.text)).toMatchObject({
      object: 'chat.completion',
      model: 'm1',
      usage: { total_tokens: 12 },
    });
    const emb = JSON.parse((await post('/v1/embeddings', 'e1', 'b')).text);
    expect(emb).toMatchObject({ object: 'list', usage: { prompt_tokens: 8 } });
    const resp = JSON.parse((await post('/v1/responses', 'r1', 'c')).text);
    expect(resp).toMatchObject({ object: 'response', usage: { input_tokens: 9, output_tokens: 4 } });
    const cmpl = JSON.parse((await post('/v1/completions', 'c1', 'd')).text);
    expect(cmpl.object).toBe('text_completion');
  });

  it('scripts statuses, resets, hangs, delays and non-JSON per attempt, and counts', async () => {
    mock.reset();
    mock.setBehaviour((req) => {
      if (req.customId === 'rl' && req.attemptNo === 1)
        return { kind: 'status', status: 429, headers: { 'retry-after': '2' } };
      if (req.customId === 'reset') return { kind: 'reset' };
      if (req.customId === 'hang') return { kind: 'hang' };
      if (req.customId === 'slow') return { kind: 'delay', ms: 150 };
      if (req.customId === 'html') return { kind: 'not-json' };
      if (req.customId === 'trickle') return { kind: 'trickle', chunks: 4, intervalMs: 20 };
      return { kind: 'ok' };
    });
    const first = await post('/v1/chat/completions', 'm', 'rl');
    expect(first.status).toBe(429);
    expect(first.headers['retry-after']).toBe('2');
    expect((await post('/v1/chat/completions', 'm', 'rl')).status).toBe(200);
    expect(mock.countsByCustomId.get('rl')).toBe(2);
    await expect(post('/v1/chat/completions', 'm', 'reset')).rejects.toThrow();
    await expect(post('/v1/chat/completions', 'm', 'hang', 200)).rejects.toThrow();
    const t0 = Date.now();
    expect((await post('/v1/chat/completions', 'm', 'slow')).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    const html = await post('/v1/chat/completions', 'm', 'html');
    expect(() => JSON.parse(html.text)).toThrow();
    expect(JSON.parse((await post('/v1/chat/completions', 'm', 'trickle')).text).object).toBe(
      'chat.completion',
    );
    expect(mock.requests.map((r) => r.outcome)).toEqual([
      'status',
      'ok',
      'reset',
      'hang',
      'delay',
      'not-json',
      'trickle',
    ]);
    mock.setBehaviour(null);
  });

  it('records the maximum in flight per model and in total', async () => {
    mock.reset();
    // Every answer waits until all 8 have arrived: all 8 are in flight at once however slowly a
    // loaded machine sends them (a 500 ms latency let the first answer go before the last arrived).
    let arrived = 0;
    let allArrived = () => {};
    const all = new Promise<void>((resolve) => {
      allArrived = resolve;
    });
    mock.setBehaviour(async () => {
      if (++arrived === 8) allArrived();
      await all;
      return { kind: 'ok' };
    });
    await Promise.all([
      ...Array.from({ length: 5 }, (_, i) => post('/v1/chat/completions', 'x', `x${i}`)),
      ...Array.from({ length: 3 }, (_, i) => post('/v1/chat/completions', 'y', `y${i}`)),
    ]);
    mock.setBehaviour(null);
    expect(mock.maxInFlight.byModel.get('x')).toBe(5);
    expect(mock.maxInFlight.byModel.get('y')).toBe(3);
    expect(mock.maxInFlight.total).toBe(8);
    // A request leaves the count when its answer has ended at the mock, which may come after the
    // client read the body.
    await expect.poll(() => mock.inFlight.total).toBe(0);
  });

  it('a request its client gives up on while a behaviour holds it stops counting as in flight at once', async () => {
    mock.reset();
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    mock.setBehaviour(async () => {
      await held;
      return { kind: 'ok' };
    });
    const client = new AbortController();
    const sent = request(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'held', messages: [] }),
      signal: client.signal,
    }).catch((err: Error) => err);
    await expect.poll(() => mock.inFlight.byModel.get('held') ?? 0).toBe(1);
    // The client hangs up (a daemon's abort or timeout): the upstream no longer has it in flight.
    client.abort();
    expect(await sent).toBeInstanceOf(Error);
    await expect.poll(() => mock.inFlight.byModel.get('held') ?? 0).toBe(0);
    // Nor once the behaviour lets it go (its answer has nowhere to go).
    release();
    await expect.poll(() => mock.requests.filter((r) => r.model === 'held').length).toBe(1);
    expect(mock.requests.find((r) => r.model === 'held')?.endedAt).not.toBeNull();
    expect(mock.inFlight.byModel.get('held') ?? 0).toBe(0);
    expect(mock.inFlight.total).toBe(0);
    mock.setBehaviour(null);
  });
});
