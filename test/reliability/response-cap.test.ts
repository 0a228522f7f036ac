import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * Finding 2 of issue 17: upstream answers were buffered with no size limit (only the 600 s timeout
 * bounded them). Two endless answers grew the server by 210 MB in 12 s. Now `maxResponseBytes` cuts
 * an answer off at the cap: the request fails with `response_too_large` in the error file at once,
 * without retries and without waiting for the timeout. (Memory figures: response-cap-memory.test.ts.)
 */

const CAP = 1024 * 1024;
const BEHAVIOURS: Record<string, MockBehaviour> = {
  endless: { kind: 'endless' },
  over: { kind: 'large', bytes: 3 * CAP },
  under: { kind: 'large', bytes: CAP - 1024 },
  small: { kind: 'ok' },
};

let mock: MockUpstream;
let t: TestServer;

beforeAll(async () => {
  mock = await startMockUpstream();
  mock.setBehaviour((req) => BEHAVIOURS[req.customId ?? ''] ?? { kind: 'ok' });
  t = await startTestServer({
    daemon: true,
    routing: { upstream: `${mock.url}/v1`, upstreamApiKey: 'sk-cap' },
    daemonConfig: {
      pollIntervalMs: 100,
      maxRetries: 3,
      backoffMs: 10,
      // Long: a cut-off must not wait for the timeout.
      requestTimeoutMs: 120_000,
      maxResponseBytes: CAP,
      logger: () => {},
    },
  });
});

afterAll(async () => {
  await t?.close();
  await mock?.close();
});

interface Line {
  custom_id: string;
  response: { status_code: number; body: { choices?: { message: { content: string } }[] } } | null;
  error: { code: string; message: string } | null;
}

describe('an upstream answer larger than maxResponseBytes', () => {
  it('fails its request with response_too_large at once, without retries; answers under the cap complete', async () => {
    const ids = Object.keys(BEHAVIOURS);
    const file = await upload(t.alice, jsonl(ids.map((id, i) => chatLine(i, { custom_id: id }))));
    const started = Date.now();
    const created = await t.alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const batch = await waitFor(async () => {
      const b = await t.alice.batches.retrieve(created.id);
      return b.status === 'completed' ? b : null;
    }, 60_000);
    const elapsed = Date.now() - started;
    expect(batch.request_counts).toMatchObject({ total: 4, completed: 2, failed: 2 });
    // Far sooner than the 120 s timeout: the cap cut the endless answer off.
    expect(elapsed).toBeLessThan(60_000);
    const lines = async (id: string | null | undefined) =>
      id
        ? (await (await t.alice.files.content(id)).text())
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Line)
        : [];
    const byId = new Map(
      [...(await lines(batch.output_file_id)), ...(await lines(batch.error_file_id))].map((l) => [
        l.custom_id,
        l,
      ]),
    );
    for (const id of ['endless', 'over']) {
      expect(byId.get(id), id).toMatchObject({
        response: null,
        error: {
          code: 'response_too_large',
          message: expect.stringMatching(/maxResponseBytes \(1048576 bytes\)/),
        },
      });
      // Final: sending it again would fetch up to the cap again for the same end.
      expect(mock.countsByCustomId.get(id), id).toBe(1);
    }
    expect(byId.get('under')?.response?.status_code).toBe(200);
    expect(byId.get('under')?.response?.body.choices?.[0]?.message.content.length).toBeGreaterThan(
      CAP - 2048,
    );
    expect(byId.get('small')?.error).toBeNull();
  }, 90_000);
});
