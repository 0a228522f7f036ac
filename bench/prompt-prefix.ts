/**
 * Bench: shared prompts go together (issue 15 item 3, docs/decisions/0008). A batch of 2,000 chat
 * requests built from 20 system prompts in shuffled order, sent by one daemon process to a mock
 * process with a prompt cache (src/mock-upstream/prefix-cache.ts: 4 prefixes, LRU, 3 s TTL; a miss
 * answers after 100 ms, a hit after 20 ms, as prefill of a cached prompt is skipped). The same file
 * is sent in prefix order (today's code) and in line order (the baseline: the same file with its
 * templates' prefix hashes removed, which is the order the claim took before migration 0016).
 * Rounds alternate (a b b a …); figures are medians; time is from the batch's creation to its end
 * (PostgreSQL's clock); hits are counted at the mock.
 * Standalone: `node --import tsx bench/prompt-prefix.ts [rounds]`.
 */
import { fileURLToPath } from 'node:url';
import type { RequestTemplateInput } from '../src/domain/templates.js';
import type { PostgresRequestManager } from '../src/manager/request-manager.js';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';
import {
  alternate,
  type MockProcess,
  median,
  startDaemonProcess,
  startMockProcess,
} from './support/processes.js';

const REQUESTS = 2000;
const PROMPTS = 20;
const CONCURRENCY = 16;
const MODEL = 'bench-prefix';
const CACHE = { capacity: 4, ttlMs: 3000, hitLatencyMs: 20 };
const MISS_MS = 100;

type Order = 'prefix' | 'line';

function shuffled(url: string, round: number): RequestTemplateInput[] {
  const out: RequestTemplateInput[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const system = `You are assistant ${i % PROMPTS}. ${'Answer in the house style, citing the handbook. '.repeat(40)}`;
    out.push({
      endpoint: url,
      method: 'POST',
      path: '/v1/chat/completions',
      body: JSON.stringify({
        model: MODEL,
        messages: [
          { role: 'system', content: system },
          { role: 'user', content: `question ${i} of round ${round}` },
        ],
      }),
      model: MODEL,
      apiKey: 'sk-bench',
      customId: `r${round}-${i}`,
    });
  }
  let seed = 4242 + round;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function run(
  manager: PostgresRequestManager,
  mock: MockProcess,
  order: Order,
  round: number,
): Promise<{ seconds: number; hits: number }> {
  const fileId = await manager.createFile('prefix.jsonl', null, shuffled(mock.url, round));
  if (order === 'line') {
    await manager.pool.query(
      `UPDATE ${manager.schema}.request_templates SET prefix_hash = NULL WHERE file_id = $1`,
      [fileId],
    );
  }
  await mock.reset();
  const batchId = await manager.createBatch(fileId);
  for (;;) {
    const { rows } = await manager.pool.query(
      `SELECT extract(epoch FROM finished_at - created_at)::float8 AS seconds, completed_count
         FROM ${manager.schema}.batches WHERE id = $1 AND finished_at IS NOT NULL`,
      [batchId],
    );
    if (rows[0]) {
      if (Number(rows[0].completed_count) !== REQUESTS) throw new Error(`expected ${REQUESTS} completed`);
      const stats = await mock.stats();
      const cache = stats.prefixCache!;
      return { seconds: rows[0].seconds as number, hits: cache.hits / (cache.hits + cache.misses) };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '?');
const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

export async function benchPromptPrefix(options: { rounds?: number } = {}): Promise<{ markdown: string }> {
  const rounds = options.rounds ?? 3;
  const db = await createTestDb({ max: 4 });
  const mock = await startMockProcess(MISS_MS, undefined, undefined, CACHE);
  const manager = db.manager({ logger: () => {} });
  const daemon = await startDaemonProcess({
    databaseUrl: TEST_DATABASE_URL,
    schema: db.schema,
    config: { modelConcurrencyLimits: { [MODEL]: CONCURRENCY } },
  });
  const sides: Record<Order, { seconds: number[]; hits: number[] }> = {
    prefix: { seconds: [], hits: [] },
    line: { seconds: [], hits: [] },
  };
  try {
    for (let i = 0; i < rounds; i++) {
      for (const order of alternate(i, 'prefix', 'line') as Order[]) {
        const r = await run(manager, mock, order, i);
        sides[order].seconds.push(r.seconds);
        sides[order].hits.push(r.hits);
      }
    }
  } finally {
    await daemon.stop();
    await mock.close();
    await db.close();
  }
  const row = (name: string, o: Order) =>
    `| ${name} | ${pct(median(sides[o].hits))} (${sides[o].hits.map(pct).join(', ')}) | ${fmt(median(sides[o].seconds))} s (${sides[o].seconds.map((x) => fmt(x)).join(', ')}) |`;
  return {
    markdown: [
      `### Prompt prefix order (${REQUESTS.toLocaleString('en')} requests, ${PROMPTS} system prompts, shuffled)`,
      '',
      `One daemon process at ${CONCURRENCY} in flight; a mock process with a prompt cache of ${CACHE.capacity} prefixes`,
      `(LRU, ${CACHE.ttlMs / 1000} s TTL): a miss answers after ${MISS_MS} ms, a hit after ${CACHE.hitLatencyMs} ms. Line order is`,
      'the same file with its prefix hashes removed (the claim order before migration 0016).',
      `Medians of ${rounds} alternating rounds (each run in brackets).`,
      '',
      '| order | cache hits | time |',
      '|---|---|---|',
      row('line order (baseline)', 'line'),
      row('prefix order', 'prefix'),
      '',
      `Prefix order: ${pct(median(sides.prefix.hits))} hits against ${pct(median(sides.line.hits))} (goal ≥ 80 %), ${fmt(median(sides.line.seconds) / median(sides.prefix.seconds), 1)}× faster.`,
    ].join('\n'),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rounds = process.argv[2] ? Number(process.argv[2]) : undefined;
  console.log((await benchPromptPrefix({ rounds })).markdown);
}
