/**
 * Bench: the cost of usage accounting (issue 12) on the 20,000 × 0 ms job at 64 in flight. One
 * daemon process (bench/children/daemon.ts) sends alternately to two mock processes answering every
 * request with the same chat completion: with its usage block (cached and reasoning details
 * included: the daemon extracts it, writes five counts per row, and the batch's ending sums them per
 * model), or without it, padded to the same length (the daemon finds nothing to count and writes
 * nulls). The same code runs on both sides; the difference is the accounting work. Rounds alternate
 * (a b b a …); figures are medians; the daemon is timed from the batch's creation to its end
 * (PostgreSQL's clock), CPU per request from the daemon's process and its PostgreSQL backends.
 * Standalone: `node --import tsx bench/usage-accounting.ts [rounds]`.
 */
import { fileURLToPath } from 'node:url';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';
import { daemonBatch } from './daemon-throughput.js';
import { alternate, BackendCpu, median, startDaemonProcess, startMockProcess } from './support/processes.js';

const REQUESTS = 20_000;
const CONCURRENCY = 64;

interface Side {
  seconds: number[];
  self: number[];
  pg: number[];
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '?');

export async function benchUsageAccounting(options: { rounds?: number } = {}): Promise<{ markdown: string }> {
  const rounds = options.rounds ?? 6;
  const db = await createTestDb({ max: 4 });
  const withUsage = await startMockProcess(0, undefined, 'usage');
  const without = await startMockProcess(0, undefined, 'no-usage');
  const model = 'bench-usage';
  const manager = db.manager({ logger: () => {} });
  const daemon = await startDaemonProcess({
    databaseUrl: TEST_DATABASE_URL,
    schema: db.schema,
    config: { modelConcurrencyLimits: { [model]: CONCURRENCY } },
  });
  const backends = new BackendCpu(db.pool, daemon.app);
  const sides: Record<'usage' | 'none', Side> = {
    usage: { seconds: [], self: [], pg: [] },
    none: { seconds: [], self: [], pg: [] },
  };
  try {
    for (const mock of [withUsage, without]) await daemonBatch(manager, mock.url, CONCURRENCY * 4, model);
    for (let i = 0; i < rounds; i++) {
      for (const side of alternate(i, 'usage', 'none') as ('usage' | 'none')[]) {
        const mock = side === 'usage' ? withUsage : without;
        await backends.mark();
        backends.every(200);
        const cpu0 = await daemon.cpuMs();
        const seconds = await daemonBatch(manager, mock.url, REQUESTS, model);
        await backends.stop();
        sides[side].seconds.push(seconds);
        sides[side].self.push((((await daemon.cpuMs()) - cpu0) * 1000) / REQUESTS);
        sides[side].pg.push((backends.used() * 1000) / REQUESTS);
        await db.pool.query(`VACUUM ${manager.schema}.requests`).catch(() => {});
      }
    }
    // The accounting is real: the last batch with usage has its sums.
    const { rows } = await db.pool.query(
      `SELECT total_tokens, cached_tokens, reasoning_tokens FROM ${manager.schema}.batches
        WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 2`,
    );
    if (!rows.some((r) => Number(r.total_tokens) > 0 && Number(r.cached_tokens) > 0)) {
      throw new Error('no batch counted any usage: the bench measured nothing');
    }
  } finally {
    await daemon.stop();
    await withUsage.close();
    await without.close();
    await db.close();
  }
  const u = median(sides.usage.seconds);
  const n = median(sides.none.seconds);
  const slower = (u / n - 1) * 100;
  const runs = (xs: number[]) => xs.map((x) => fmt(x)).join(', ');
  // CPU per request (daemon + its PostgreSQL backends) depends far less on other load than time.
  const cpu = (side: Side) => median(side.self) + median(side.pg);
  const cpuMore = (cpu(sides.usage) / cpu(sides.none) - 1) * 100;
  // On a loaded machine the runs of one side differ by more than the effect: say so.
  const all = [...sides.usage.seconds, ...sides.none.seconds];
  const varied = Math.max(...all) / Math.min(...all);
  const signed = (x: number) => `${x >= 0 ? '+' : '−'}${fmt(Math.abs(x), 1)} %`;
  const verdict =
    varied > 1.5
      ? `inconclusive on time: runs varied ×${fmt(varied, 1)} (other load on the machine); CPU per request ${signed(cpuMore)} (goal ≤ 5 %: ${cpuMore <= 5 ? 'met' : 'NOT met'} on CPU)`
      : `${signed(slower)} time, ${signed(cpuMore)} CPU per request (goal ≤ 5 %: ${slower <= 5 ? 'met' : 'NOT met'})`;
  return {
    markdown: [
      '### Usage accounting (20,000 × 0 ms, 64 in flight)',
      '',
      'One daemon process, two mock processes answering the same chat completion with its usage block or',
      'without it (padded to the same length). Same code both sides: the difference is extracting five',
      'counts per answer, writing them on the row, and summing them per model when the batch ends.',
      `Medians of ${rounds} alternating rounds (each run in brackets).`,
      '',
      '| answers | time | daemon CPU / request | PostgreSQL CPU / request | CPU / request |',
      '|---|---|---|---|---|',
      `| without usage (baseline) | ${fmt(n)} s (${runs(sides.none.seconds)}) | ${fmt(median(sides.none.self), 0)} µs | ${fmt(median(sides.none.pg), 0)} µs | ${fmt(cpu(sides.none), 0)} µs |`,
      `| with usage | ${fmt(u)} s (${runs(sides.usage.seconds)}) | ${fmt(median(sides.usage.self), 0)} µs | ${fmt(median(sides.usage.pg), 0)} µs | ${fmt(cpu(sides.usage), 0)} µs |`,
      '',
      `Usage accounting: ${verdict}.`,
    ].join('\n'),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rounds = process.argv[2] ? Number(process.argv[2]) : undefined;
  console.log((await benchUsageAccounting({ rounds })).markdown);
}
