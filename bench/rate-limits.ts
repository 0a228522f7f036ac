/**
 * Bench (issue 11): running a provider at its tokens-per-minute limit. The rate-limiting mock upstream
 * (its own process; continuously refilled buckets of a minute as OpenAI's, x-ratelimit-* headers on
 * every answer, 429 with retry-after-ms when over) and three library daemons (a process each) on one
 * database, in three scenarios:
 *
 *   configured        --model-tpm (modelRateLimits) at the mock's limit: goal ≤ 1 % of answers 429,
 *                     none failed, tokens a minute after the first minute ≥ 95 % of the limit;
 *   headers only      nothing configured, the daemons pace from the headers: ≤ 5 %, none failed, ≥ 90 %;
 *   concurrency only  today's behaviour, the baseline: the mock sends no limit headers (only
 *                     retry-after on a 429), so the daemons limit by concurrency alone, as before
 *                     rate limits existed (test/rate-limits/daemon-wired.test.ts checks that).
 *
 * The three scenarios run at the same time, each with its own mock process, database schema and
 * daemons, for DURATION_S: they are bound by the mock's limit, not by the CPU (a few requests a second
 * each), and one scenario after another would take three times as long. Each batch holds more than
 * the limit lets through in that time, so the daemons are never short of work; what the mock admitted
 * each second gives the rate. The first minute is left out of the rate: a provider's bucket starts
 * full, and a minute of burst would flatter any scenario. Prompts are English-like text of varied
 * lengths for gpt-4o-mini, so the daemons' tokenizer (gpt-tokenizer) and the mock's count (characters
 * / 4) differ, as a daemon's estimate and a provider's count do; the remaining the headers report
 * corrects the estimate.
 * Standalone: `node --import tsx bench/rate-limits.ts`.
 */
import { fileURLToPath } from 'node:url';
import type { MockRateStats } from '../src/mock-upstream/rate-limits.js';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';
import { type DaemonProcess, startDaemonProcess, startMockProcess } from './support/processes.js';

const MODEL = 'gpt-4o-mini';
/** The mock's limits: tokens bind (≈90 requests a minute); requests do not. */
const LIMIT_TPM = 30_000;
const MOCK_RPM = 1_000;
const LATENCY_MS = 300;
const CONCURRENCY = 16;
const DAEMONS = 3;
const DURATION_S = 120;
const FIRST_MINUTE_S = 60;
/** More than DURATION_S lets through even with the first minute's full bucket (≈270 at ≈330 tokens). */
const REQUESTS = 600;

interface Scenario {
  name: string;
  headers: 'openai' | 'none';
  config: Record<string, unknown>;
  goal: { max429: number; minRate: number } | null;
}

const SCENARIOS: Scenario[] = [
  {
    name: '`--model-tpm` at the limit',
    headers: 'openai',
    config: { modelRateLimits: { [MODEL]: { tpm: LIMIT_TPM } } },
    goal: { max429: 0.01, minRate: 0.95 },
  },
  { name: 'headers only', headers: 'openai', config: {}, goal: { max429: 0.05, minRate: 0.9 } },
  { name: 'concurrency only (today)', headers: 'none', config: {}, goal: null },
];

interface Result {
  scenario: Scenario;
  answers: number;
  throttled: number;
  failed: number;
  completed: number;
  firstMinuteTpm: number;
  afterTpm: number;
}

const WORDS =
  'the of and to in is that it for as with was on be by at this from have or an are which not but had his they you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(
    ' ',
  );

/** Deterministic English-like prompts of 60–240 words asking 50–150 output tokens (≈330 tokens each). */
function templates(url: string, n: number) {
  let seed = 7;
  const next = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
    return seed / 2_147_483_648;
  };
  return Array.from({ length: n }, (_, i) => {
    const words = Array.from(
      { length: 60 + Math.floor(next() * 180) },
      () => WORDS[Math.floor(next() * WORDS.length)],
    );
    return {
      endpoint: url,
      method: 'POST',
      path: '/v1/chat/completions',
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: 'user', content: words.join(' ') }],
        max_tokens: 50 + Math.floor(next() * 100),
      }),
      model: MODEL,
      apiKey: 'sk-bench',
      customId: `req-${i}`,
    };
  });
}

async function runScenario(scenario: Scenario): Promise<Result> {
  const db = await createTestDb({ max: 4 });
  const mock = await startMockProcess(LATENCY_MS, {
    tpm: LIMIT_TPM,
    rpm: MOCK_RPM,
    burstSeconds: 60,
    headers: scenario.headers,
  });
  const daemons: DaemonProcess[] = [];
  try {
    for (let i = 0; i < DAEMONS; i++) {
      daemons.push(
        await startDaemonProcess({
          databaseUrl: TEST_DATABASE_URL,
          schema: db.schema,
          config: { modelConcurrencyLimits: { [MODEL]: CONCURRENCY }, ...scenario.config },
        }),
      );
    }
    const manager = db.manager({ logger: () => {} });
    const fileId = await manager.createFile('bench.jsonl', null, templates(mock.url, REQUESTS));
    // The mock's counts and buckets start with the batch.
    await mock.reset();
    const started = Date.now();
    const batchId = await manager.createBatch(fileId);
    await new Promise((r) => setTimeout(r, started + DURATION_S * 1000 + 200 - Date.now()));
    const stats = (await mock.stats()).rateLimits?.models[MODEL];
    const { rows } = await db.pool.query<{ state: string; n: number }>(
      `SELECT state, count(*)::int AS n FROM "${db.schema}".requests WHERE batch_id = $1 GROUP BY state`,
      [batchId],
    );
    await manager.cancelBatch(batchId);
    const count = (state: string) => rows.find((r) => r.state === state)?.n ?? 0;
    return {
      scenario,
      ...rates(stats),
      failed: count('failed'),
      completed: count('completed'),
    };
  } finally {
    await Promise.all(daemons.map((d) => d.stop()));
    await mock.close();
    await db.close();
  }
}

function rates(stats: MockRateStats | undefined) {
  const seconds = (stats?.perSecond ?? []).slice(0, DURATION_S);
  const sum = (from: number, to: number) =>
    seconds.slice(from, to).reduce((a, s) => a + s.tokens, 0) * (60 / (to - from));
  return {
    answers: (stats?.admitted ?? 0) + (stats?.throttled ?? 0),
    throttled: stats?.throttled ?? 0,
    firstMinuteTpm: sum(0, FIRST_MINUTE_S),
    afterTpm: sum(FIRST_MINUTE_S, DURATION_S),
  };
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const int = (x: number) => Math.round(x).toLocaleString('en-US');

function row(r: Result): string {
  const share = r.answers > 0 ? r.throttled / r.answers : 0;
  const rate = r.afterTpm / LIMIT_TPM;
  const goal = r.scenario.goal;
  const verdict = goal
    ? share <= goal.max429 && r.failed === 0 && rate >= goal.minRate
      ? `met (≤ ${pct(goal.max429)} 429s, none failed, ≥ ${pct(goal.minRate)})`
      : `NOT met (≤ ${pct(goal.max429)} 429s, none failed, ≥ ${pct(goal.minRate)})`
    : 'baseline';
  return `| ${r.scenario.name} | ${int(r.throttled)} of ${int(r.answers)} (${pct(share)}) | ${r.failed} | ${r.completed} | ${int(r.firstMinuteTpm)} | ${int(r.afterTpm)} (${pct(rate)}) | ${verdict} |`;
}

export async function benchRateLimits(): Promise<{ markdown: string }> {
  const results = await Promise.all(SCENARIOS.map((s) => runScenario(s)));
  return {
    markdown: [
      '### Rate limits: a provider run at its tokens-per-minute limit (issue 11)',
      '',
      `The rate-limiting mock upstream (its own process) admits ${int(LIMIT_TPM)} tokens and ${int(MOCK_RPM)} requests a minute`,
      `(buckets of a minute, refilled continuously; it counts characters / 4 + max_tokens) and answers after ${LATENCY_MS} ms;`,
      `${DAEMONS} daemon processes on one database, concurrency limit ${CONCURRENCY}, ${REQUESTS} gpt-4o-mini requests of ≈330`,
      `tokens (more than ${DURATION_S} s let through). Each scenario runs ${DURATION_S} s, the three at once (each with`,
      'its own mock, schema and daemons; they are bound by the limit, not the CPU); one run each. Tokens a minute',
      `are what the mock admitted, over the first minute and over seconds ${FIRST_MINUTE_S}–${DURATION_S}. The baseline's mock`,
      'sends no limit headers, so its daemons behave as before rate limits (concurrency, retries with backoff).',
      '',
      '| scenario | answered 429 | failed | completed | tokens/min, first minute | tokens/min after it (of the limit) | goal |',
      '|---|---|---|---|---|---|---|',
      ...results.map(row),
    ].join('\n'),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { markdown } = await benchRateLimits();
  process.stdout.write(`${markdown}\n`);
}
