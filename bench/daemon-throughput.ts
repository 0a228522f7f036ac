/**
 * Bench: the daemon end to end (claim → POST to a loopback mock → store every answer) against raw
 * undici firing the same requests with no database, measured in the same run.
 *  (1) 20,000 requests, zero-latency upstream, 64 in flight (goal: ≥ half of raw undici's rate).
 *  (2) 2,000 requests, 100 ms upstream latency, limit 100 (goal: within 10% of the ideal 2 s).
 * Standalone: `node --import tsx bench/daemon-throughput.ts`.
 */
import { Pool } from 'undici';
import { type MockUpstream, startMockUpstream } from '../src/mock-upstream/server.js';
import type { PostgresRequestManager } from '../src/store/request-manager.js';
import { createTestDb } from '../test/support/db.js';

function template(mock: MockUpstream, i: number, model: string) {
  return {
    endpoint: mock.url,
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model, messages: [{ role: 'user', content: `hello ${i}` }] }),
    model,
    apiKey: 'sk-bench',
    customId: `req-${i}`,
  };
}

async function rawUndici(mock: MockUpstream, n: number, concurrency: number): Promise<number> {
  const pool = new Pool(mock.url, { connections: concurrency, pipelining: 1 });
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const res = await pool.request({
        path: '/v1/chat/completions',
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench' },
        body: JSON.stringify({ model: 'raw', messages: [{ role: 'user', content: `hello ${i}` }] }),
      });
      const text = await res.body.text();
      JSON.parse(text);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  await pool.close();
  return seconds;
}

/** Creates the batch (not timed), then times from the batch's creation to its end. */
async function daemonRun(
  manager: PostgresRequestManager,
  mock: MockUpstream,
  n: number,
  model: string,
): Promise<number> {
  async function* templates() {
    for (let i = 0; i < n; i++) yield template(mock, i, model);
  }
  const fileId = await manager.createFileStream('bench.jsonl', null, templates());
  const started = performance.now();
  const batchId = await manager.createBatch(fileId);
  for (;;) {
    const { rows } = await manager.pool.query(
      `SELECT finished_at FROM ${manager.schema}.batches WHERE id = $1`,
      [batchId],
    );
    if (rows[0].finished_at) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - started) / 1000;
  const { rows } = await manager.pool.query(
    `SELECT count(*) FILTER (WHERE state = 'completed')::int AS ok FROM ${manager.schema}.requests WHERE batch_id = $1`,
    [batchId],
  );
  if (rows[0].ok !== n) throw new Error(`expected ${n} completed, got ${rows[0].ok}`);
  return seconds;
}

export interface ThroughputResult {
  markdown: string;
}

export async function benchDaemonThroughput(
  options: { requests?: number; latencyRequests?: number } = {},
): Promise<ThroughputResult> {
  const n = options.requests ?? 20_000;
  const n2 = options.latencyRequests ?? 2_000;
  const db = await createTestDb({ max: 10 });
  const mock = await startMockUpstream({ record: false });
  try {
    // Untimed warm-up of both sides (JIT, connections), so neither timed run pays for it.
    await rawUndici(mock, 2000, 64);
    const rawBefore = await rawUndici(mock, n, 64);
    const manager = db.manager({
      modelConcurrencyLimits: { 'bench-64': 64, 'bench-100': 100 },
      claimBatchSize: 100,
      logger: () => {},
    });
    const daemon = await manager.run();
    let zero: number;
    let latency: number;
    try {
      await daemonRun(manager, mock, 2000, 'bench-64');
      zero = await daemonRun(manager, mock, n, 'bench-64');
      mock.setLatency(100);
      latency = await daemonRun(manager, mock, n2, 'bench-100');
      mock.setLatency(0);
    } finally {
      await daemon.stop();
    }
    // The same with commits that do not wait for the WAL flush (opt-in: synchronousCommit false).
    const asyncDaemon = await manager.run({ synchronousCommit: false });
    let zeroAsync: number;
    try {
      zeroAsync = await daemonRun(manager, mock, n, 'bench-64');
    } finally {
      await asyncDaemon.stop();
    }
    // Baselines again after the daemon runs (the machine is shared: its load drifts), averaged.
    const rawAfter = await rawUndici(mock, n, 64);
    const raw = (rawBefore + rawAfter) / 2;
    mock.setLatency(100);
    const rawLatency = await rawUndici(mock, n2, 100);
    mock.setLatency(0);
    const ideal = (n2 / 100) * 0.1;
    const ratio = raw / zero;
    return {
      markdown: [
        `### Daemon throughput (claim → POST → store)`,
        '',
        '| run | requests | time | rate | baseline (same run) | verdict |',
        '|---|---|---|---|---|---|',
        `| zero-latency loopback, 64 in flight | ${n} | ${zero.toFixed(2)} s | ${Math.round(n / zero)} req/s | raw undici, no DB: ${raw.toFixed(2)} s (${Math.round(n / raw)} req/s; mean of ${rawBefore.toFixed(2)} s before and ${rawAfter.toFixed(2)} s after) | ${(ratio * 100).toFixed(0)}% of raw's rate (goal ≥ 50%): ${ratio >= 0.5 ? 'met' : 'NOT met'} |`,
        `| same, synchronousCommit: false | ${n} | ${zeroAsync.toFixed(2)} s | ${Math.round(n / zeroAsync)} req/s | raw undici as above | ${((raw / zeroAsync) * 100).toFixed(0)}% of raw's rate |`,
        `| 100 ms upstream latency, limit 100 | ${n2} | ${latency.toFixed(2)} s | ${Math.round(n2 / latency)} req/s | ideal ${ideal.toFixed(2)} s; raw undici, no DB, 100 connections: ${rawLatency.toFixed(2)} s | ${(((latency - ideal) / ideal) * 100).toFixed(1)}% over ideal (goal ≤ 10%): ${latency <= ideal * 1.1 ? 'met' : 'NOT met'}; ${(((latency - rawLatency) / rawLatency) * 100).toFixed(1)}% over raw undici |`,
        '',
        'Each side first runs 2,000 untimed requests (warm-up: JIT, connections).',
        '',
        'Peers for (1), from REFERENCE §6 (not re-measured here): graphile-worker 10.3 s, pg-boss 24.2 s for 20,000.',
        '',
        'Before slot budgets (per-claim global lock: BEGIN + SELECT … FOR UPDATE of the model rows +',
        'write-and-claim + COMMIT, two cycles overlapped; commit 80a503e), this bench on the same machine',
        'minutes apart: 7.76–7.91 s, 23–24% of raw, at zero latency; 2.47–2.49 s at 100 ms.',
        '',
        'Before the CPU cuts of commits c21bc3c, 1b3fc0b and 723e268 (commit dd72255: writes built by',
        'spreading, a timer per attempt, Pool.request with a Readable body, the writes sent as 13 escaped',
        'arrays), this bench minutes apart: 4.33 s (43% of raw) and 4.71 s (40%) at zero latency, 2.34 s at',
        '100 ms. Per request at zero latency (alternating runs): Node CPU ≈190 → ≈160 µs, PostgreSQL CPU',
        '≈165 → ≈125 µs. The zero-latency ratio varies from run to run on this shared 2-core machine: six',
        'runs of this bench within minutes after the cuts gave 40–54% of raw (3.38–4.23 s), four of the',
        'previous code 38–43% (4.19–4.71 s).',
        '',
        'Reading: each daemon claims within its slot budget (src/store/sql/budget.ts) with one autocommit',
        'claim statement per group of slots (up to two at once), started as soon as attempts finish; the',
        'outcomes are written by separate statements once no claim is running; the budget transaction runs',
        'a few times a second, not per request. What is left per request is PostgreSQL’s work (a claimed and',
        'a written row, ≈20 µs each plus ≈0.6 ms per statement on this machine) and the daemon’s own CPU',
        '(pg protocol, settle, bookkeeping), on the one thread it shares here with the mock upstream and the',
        'HTTP client. At 100 ms the 100 requests of each of the 20 rounds arrive and leave together, and',
        'this process handles them one at a time: raw undici, with no database at all, is itself about 10%',
        'over the ideal, so the goal sits at the HTTP floor of this setup.',
      ].join('\n'),
    };
  } finally {
    await mock.close();
    await db.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchDaemonThroughput();
  console.log(result.markdown);
}
