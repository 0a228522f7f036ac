import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from '../server/support.js';
import { waitFor } from '../support/mock-upstream.js';

/**
 * Every upstream fault, end to end: a batch through the API server and its in-process daemon
 * against the loopback mock. Each line of the batch meets one fault, either once (then recovers) or
 * every time; the test checks its final state, how many attempts the upstream saw and the database
 * counted, and what the output or error file tells the user.
 */

const MAX_RETRIES = 2; // so a fault that never clears costs exactly 3 attempts
// Far above any ordinary answer on a loaded machine; the trickle that must time out is far above it.
const TIMEOUT_MS = 8000;
const QUOTA = {
  error: {
    message: 'You exceeded your current quota.',
    type: 'insufficient_quota',
    code: 'insufficient_quota',
  },
};

type Fault = {
  name: string;
  behaviour: MockBehaviour;
  /** Model routed to a closed port instead of the mock. */
  refused?: boolean;
};

const FAULTS: Fault[] = [
  { name: '429-retry-after', behaviour: { kind: 'status', status: 429, headers: { 'retry-after': '1' } } },
  { name: '429-quota', behaviour: { kind: 'status', status: 429, body: QUOTA } },
  ...[500, 502, 503, 504, 529].map((status) => ({
    name: `${status}`,
    behaviour: { kind: 'status', status } as MockBehaviour,
  })),
  { name: 'reset', behaviour: { kind: 'reset' } },
  { name: 'hang', behaviour: { kind: 'hang' } },
  { name: 'not-json', behaviour: { kind: 'not-json' } },
  { name: 'trickle-slow', behaviour: { kind: 'trickle', chunks: 8, intervalMs: 2000 } },
  { name: 'refused', behaviour: { kind: 'ok' }, refused: true },
  // Slow but inside the timeout: not a fault at all.
  { name: 'trickle-ok', behaviour: { kind: 'trickle', chunks: 4, intervalMs: 40 } },
];

/** What each fault must end in, when it happens every time. */
const PERSISTENT: Record<
  string,
  {
    attempts: number;
    state?: 'completed';
    status?: number;
    code?: RegExp;
    /** The error object's message, for an HTTP answer that is nonetheless an error. */
    message?: RegExp;
    says: RegExp;
  }
> = {
  '429-retry-after': { attempts: 3, status: 429, says: /mock status 429/ },
  '429-quota': { attempts: 1, status: 429, says: /exceeded your current quota/ },
  '500': { attempts: 3, status: 500, says: /mock status 500/ },
  '502': { attempts: 3, status: 502, says: /mock status 502/ },
  '503': { attempts: 3, status: 503, says: /mock status 503/ },
  '504': { attempts: 3, status: 504, says: /mock status 504/ },
  '529': { attempts: 3, status: 529, says: /mock status 529/ },
  reset: { attempts: 3, code: /connection/, says: /socket|reset|closed|other side/i },
  hang: { attempts: 3, code: /timeout/, says: /time/i },
  // A 200 whose body is not JSON: the error file keeps the status and the body the upstream sent,
  // and says what is wrong with it (a 200 with "error": null read as no error at all).
  'not-json': {
    attempts: 3,
    status: 200,
    code: /^invalid_response$/,
    message: /^The upstream answered 200 with a body that is not JSON\.$/,
    says: /bad gateway page/,
  },
  'trickle-slow': { attempts: 3, code: /timeout/, says: /time/i },
  refused: { attempts: 3, code: /connection/, says: /ECONNREFUSED/ },
  'trickle-ok': { attempts: 1, state: 'completed', status: 200, says: /chat\.completion/ },
};

let mock: MockUpstream;
let t: TestServer;
/** Nothing listens on 127.0.0.1:1: a refusal that no other test's ephemeral server can steal. */
const REFUSING_PORT = 1;

beforeAll(async () => {
  mock = await startMockUpstream();
  mock.setBehaviour((req) => {
    // custom ids: "<fault>/once" fails on the first attempt only, "<fault>/always" every time.
    const [name, mode] = (req.customId ?? '').split('/');
    const fault = FAULTS.find((f) => f.name === name);
    if (!fault || (mode === 'once' && req.attemptNo > 1)) return { kind: 'ok' };
    return fault.behaviour;
  });
  t = await startTestServer({
    daemon: true,
    routing: {
      upstream: `${mock.url}/v1`,
      upstreamApiKey: 'sk-faults',
      models: { 'gpt-refused': { upstream: `http://127.0.0.1:${REFUSING_PORT}`, apiKey: 'sk-faults' } },
    },
    daemonConfig: {
      pollIntervalMs: 100,
      maxRetries: MAX_RETRIES,
      backoffMs: 10,
      maxBackoffMs: 40,
      requestTimeoutMs: TIMEOUT_MS,
      logger: () => {},
    },
  });
});

afterAll(async () => {
  await t?.close();
  await mock?.close();
});

/** A line of an output or error file. */
interface OutputLine {
  custom_id: string;
  response: { status_code: number; body: unknown } | null;
  error: { code: string; message: string } | null;
}

interface Row {
  custom_id: string;
  state: string;
  attempt: number;
  response_status: number | null;
  error_code: string | null;
  error_message: string | null;
}

async function runFaults(mode: 'once' | 'always') {
  const lines = FAULTS.map((f, i) =>
    chatLine(i, {
      custom_id: `${f.name}/${mode}`,
      body: { model: f.refused ? 'gpt-refused' : 'gpt-test', messages: [{ role: 'user', content: f.name }] },
    }),
  );
  const file = await upload(t.alice, jsonl(lines), `${mode}.jsonl`);
  const created = await t.alice.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  const batch = await waitFor(async () => {
    const b = await t.alice.batches.retrieve(created.id);
    return b.status === 'completed' ? b : null;
  }, 120_000);
  const { rows } = await t.db.pool.query<Row>(
    `SELECT tm.custom_id, r.state, r.attempt, r.response_status, r.error_code, r.error_message
       FROM ${t.s}.requests r JOIN ${t.s}.request_templates tm ON tm.id = r.template_id
      WHERE r.batch_id = (SELECT id FROM ${t.s}.batches WHERE replace(id::text, '-', '') = $1)`,
    [created.id.slice('batch_'.length)],
  );
  const byId = new Map(rows.map((r) => [r.custom_id, r]));
  const fileLines = async (id: string | null | undefined) =>
    id
      ? (await (await t.alice.files.content(id)).text())
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as OutputLine)
      : [];
  const out = new Map(
    [...(await fileLines(batch.output_file_id)), ...(await fileLines(batch.error_file_id))].map((l) => [
      l.custom_id,
      l,
    ]),
  );
  return { batch, byId, out };
}

describe('upstream faults', () => {
  it('recovers from every fault that happens once: completed, with exactly one retry', async () => {
    const { batch, byId, out } = await runFaults('once');
    for (const f of FAULTS) {
      const id = `${f.name}/once`;
      const row = byId.get(id)!;
      if (f.name === '429-quota') {
        // Not retriable: no retry can refill a quota.
        expect(row, id).toMatchObject({ state: 'failed', attempt: 1, response_status: 429 });
        expect(out.get(id)!.response?.status_code).toBe(429);
        continue;
      }
      if (f.refused) {
        // The port stays closed: every attempt is refused (see the persistent case).
        expect(row, id).toMatchObject({ state: 'failed', attempt: 3 });
        continue;
      }
      const attempts = f.name === 'trickle-ok' ? 1 : 2;
      // On failure, say what the mock did with each attempt and how long each took.
      const seen = mock.requests
        .filter((r) => r.customId === id)
        .map((r) => `${r.outcome} ${r.endedAt === null ? 'open' : `${r.endedAt - r.receivedAt} ms`}`);
      expect(row, `${id}: ${seen.join(', ')}`).toMatchObject({
        state: 'completed',
        attempt: attempts,
        response_status: 200,
      });
      expect(mock.countsByCustomId.get(id), id).toBe(attempts);
      expect(out.get(id)!.response?.status_code, id).toBe(200);
      expect(out.get(id)!.error, id).toBeNull();
    }
    // Per-row checks first: a failure names the fault.
    expect(batch.request_counts).toMatchObject({
      total: FAULTS.length,
      completed: FAULTS.length - 2,
      failed: 2,
    });
    // Retry-After: 1 was honoured (the retry came no sooner than a second after the 429).
    const sent = mock.requests.filter((r) => r.customId === '429-retry-after/once');
    expect(sent[1]!.receivedAt - sent[0]!.receivedAt).toBeGreaterThanOrEqual(1000);
  }, 120_000);

  it('ends every fault that never clears in the right state, attempts and a telling error', async () => {
    const { batch, byId, out } = await runFaults('always');
    const report: string[] = [];
    for (const f of FAULTS) {
      const id = `${f.name}/always`;
      const want = PERSISTENT[f.name]!;
      const row = byId.get(id)!;
      const line = out.get(id)!;
      expect(row.state, id).toBe(want.state ?? 'failed');
      expect(row.attempt, id).toBe(want.attempts);
      if (!f.refused) expect(mock.countsByCustomId.get(id), id).toBe(want.attempts);
      // The error file line carries the upstream's answer, or a code and message for non-HTTP faults.
      const text = JSON.stringify(line);
      if (want.status !== undefined) {
        expect(line.response?.status_code, id).toBe(want.status);
        // An upstream error status is its own diagnosis (error null, as at OpenAI); a 2xx that
        // failed needs the error object to say why.
        if (want.code === undefined) expect(line.error, `${id}: ${text}`).toBeNull();
        else {
          expect(line.error?.code, `${id}: ${text}`).toMatch(want.code);
          expect(line.error?.message, `${id}: ${text}`).toMatch(want.message!);
        }
      } else {
        expect(line.error?.code, `${id}: ${text}`).toMatch(want.code!);
      }
      expect(text, id).toMatch(want.says);
      report.push(
        `${f.name}: ${row.attempt} attempts, ${line.error?.code ?? `HTTP ${line.response?.status_code}`}`,
      );
    }
    expect(batch.request_counts).toMatchObject({
      total: FAULTS.length,
      completed: 1,
      failed: FAULTS.length - 1,
    });
    expect(report).toHaveLength(FAULTS.length);
    console.log(`upstream faults (never clearing):\n  ${report.join('\n  ')}`);
  }, 120_000);
});
