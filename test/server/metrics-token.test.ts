import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support.js';

/** /metrics behind a bearer token (ServerOptions.metricsToken, `--metrics-token`). */

let t: TestServer;
let open: TestServer;
beforeAll(async () => {
  t = await startTestServer({ metricsToken: 'mt-0123456789' });
  open = await startTestServer();
});
afterAll(async () => {
  await t?.close();
  await open?.close();
});

const metrics = (server: TestServer, authorization?: string) =>
  fetch(`${server.server.url}/metrics`, { headers: authorization ? { authorization } : {} });

describe('/metrics with a token', () => {
  it('answers 401 with the error envelope without the right bearer token', async () => {
    for (const auth of [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      'Bearer mt-012345678',
      'Bearer mt-01234567890',
      'Basic bXQtMDEyMzQ1Njc4OQ==',
      'mt-0123456789',
      `Bearer ${t.aliceKey}`, // an API key is not the metrics token
    ]) {
      const res = await metrics(t, auth);
      expect(res.status, String(auth)).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="metrics"');
      const body = (await res.json()) as { error: { code: string; type: string } };
      expect(body.error).toMatchObject({ code: 'invalid_metrics_token', type: 'invalid_request_error' });
    }
  });

  it('serves Prometheus text with it, and leaves the other routes as they were', async () => {
    // The scheme is case-insensitive (RFC 9110), as for the API keys.
    expect((await metrics(t, 'bearer mt-0123456789')).status).toBe(200);
    const res = await metrics(t, 'Bearer mt-0123456789');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^# HELP /m);
    // The refused scrapes above were counted like any request.
    expect(text).toMatch(/route="\/metrics",status="401"/);
    expect((await fetch(`${t.server.url}/healthz`)).status).toBe(200);
    expect((await t.alice.batches.list()).data).toEqual([]);
  });

  it('stays open without one (the default)', async () => {
    const res = await metrics(open);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^# HELP /m);
  });
});
