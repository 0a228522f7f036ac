/**
 * Bench: the library daemon end to end (claim → POST → store every answer) against raw undici firing
 * the same number of requests with no database, on the jobs of issue 10 (20,000 × 0 ms at 64 in
 * flight, 2,000 × 100 ms at 100, 6,000 × 1 s at 1,000), plus the zero-latency job with
 * synchronousCommit off.
 *
 * Three processes, as in production: the mock upstream (one per job), the daemon (a long-lived
 * `manager.run()` in bench/children/daemon.ts, warmed up with an untimed batch) and the baseline
 * (bench/children/raw-undici.mjs, a process per run). The harness only creates the batches. The
 * sides alternate (a b b a …); figures are medians. The daemon's time runs from the batch's creation
 * (its INSERT's transaction start) to its end (finished_at), both from PostgreSQL's clock; raw undici
 * times itself from its first request to its last answer.
 *
 * CPU per request is measured per process: the daemon's (process.cpuUsage over IPC), its PostgreSQL
 * backends' (/proc of the pids carrying its application_name) and the mock's.
 * Standalone: `node --import tsx bench/daemon-throughput.ts [rounds]`.
 */
import { fileURLToPath } from 'node:url';
import type { PostgresRequestManager } from '../src/manager/request-manager.js';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';
import {
  alternate,
  BackendCpu,
  type DaemonProcess,
  type MockProcess,
  median,
  RAW_UNDICI,
  runTimed,
  startDaemonProcess,
  startMockProcess,
} from './support/processes.js';

export interface ThroughputJob {
  requests: number;
  latencyMs: number;
  concurrency: number;
  goal: { kind: 'rate' | 'time'; value: number };
  /** Daemon settings beyond the model limit (e.g. synchronousCommit: false). */
  config?: Record<string, unknown>;
  label?: string;
}

export const THROUGHPUT_JOBS: ThroughputJob[] = [
  { requests: 20_000, latencyMs: 0, concurrency: 64, goal: { kind: 'rate', value: 0.5 } },
  {
    requests: 20_000,
    latencyMs: 0,
    concurrency: 64,
    goal: { kind: 'rate', value: 0.5 },
    config: { synchronousCommit: false },
    label: 'synchronousCommit: false',
  },
  { requests: 2_000, latencyMs: 100, concurrency: 100, goal: { kind: 'time', value: 1.15 } },
  { requests: 6_000, latencyMs: 1000, concurrency: 1000, goal: { kind: 'time', value: 1.15 } },
];

interface Side {
  seconds: number[];
  self: number[];
  pg: number[];
  mock: number[];
}

const newSide = (): Side => ({ seconds: [], self: [], pg: [], mock: [] });

/** The bench's `n` templates of `model`, sent to the mock at `mockUrl`. */
export function templates(mockUrl: string, n: number, model: string) {
  return (async function* () {
    for (let i = 0; i < n; i++) {
      yield {
        endpoint: mockUrl,
        method: 'POST',
        path: '/v1/chat/completions',
        body: JSON.stringify({ model, messages: [{ role: 'user', content: `hello ${i}` }] }),
        model,
        apiKey: 'sk-bench',
        customId: `req-${i}`,
      };
    }
  })();
}

/** Creates a batch of `n` (file stored untimed) and waits for its end; returns PostgreSQL's duration. */
export async function daemonBatch(
  manager: PostgresRequestManager,
  mockUrl: string,
  n: number,
  model: string,
) {
  const fileId = await manager.createFileStream('bench.jsonl', null, templates(mockUrl, n, model));
  const batchId = await manager.createBatch(fileId);
  for (;;) {
    const { rows } = await manager.pool.query(
      `SELECT extract(epoch FROM finished_at - created_at)::float8 AS seconds,
              (SELECT count(*) FROM ${manager.schema}.requests r WHERE r.batch_id = b.id AND r.state = 'completed')::int AS ok
         FROM ${manager.schema}.batches b WHERE id = $1 AND finished_at IS NOT NULL`,
      [batchId],
    );
    if (rows[0]) {
      if (rows[0].ok !== n) throw new Error(`expected ${n} completed, got ${rows[0].ok}`);
      return rows[0].seconds as number;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function rawRun(job: ThroughputJob, mock: MockProcess, side: Side) {
  const mock0 = mock.cpuMs();
  const run = await runTimed(RAW_UNDICI, [
    mock.url,
    String(job.concurrency),
    '--count',
    String(job.requests),
  ]);
  side.seconds.push((JSON.parse(run.stdout) as { seconds: number }).seconds);
  side.self.push((run.cpuMs * 1000) / job.requests);
  side.pg.push(0);
  side.mock.push(((mock.cpuMs() - mock0) * 1000) / job.requests);
}

async function daemonRun(
  job: ThroughputJob,
  manager: PostgresRequestManager,
  daemon: DaemonProcess,
  backends: BackendCpu,
  mock: MockProcess,
  model: string,
  side: Side,
) {
  await backends.mark();
  backends.every(200);
  const cpu0 = await daemon.cpuMs();
  const mock0 = mock.cpuMs();
  const seconds = await daemonBatch(manager, mock.url, job.requests, model);
  await backends.stop();
  side.seconds.push(seconds);
  side.self.push((((await daemon.cpuMs()) - cpu0) * 1000) / job.requests);
  side.pg.push((backends.used() * 1000) / job.requests);
  side.mock.push(((mock.cpuMs() - mock0) * 1000) / job.requests);
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '?');
const spread = (xs: number[]) => `${fmt(median(xs))} s (${xs.map((x) => fmt(x)).join(', ')})`;

export async function benchDaemonThroughput(
  options: { rounds?: number; jobs?: ThroughputJob[] } = {},
): Promise<{ markdown: string }> {
  const rounds = options.rounds ?? 3;
  const jobs = options.jobs ?? THROUGHPUT_JOBS;
  const rows: string[] = [];
  const cpuRows: string[] = [];
  for (const [j, job] of jobs.entries()) {
    const db = await createTestDb({ max: 4 });
    const mock = await startMockProcess(job.latencyMs);
    const model = `bench-${j}`;
    const manager = db.manager({ logger: () => {} });
    const daemon = await startDaemonProcess({
      databaseUrl: TEST_DATABASE_URL,
      schema: db.schema,
      config: { modelConcurrencyLimits: { [model]: job.concurrency }, ...job.config },
    });
    const backends = new BackendCpu(db.pool, daemon.app);
    const raw = newSide();
    const ours = newSide();
    try {
      // Untimed warm-up of both sides (JIT, connections, prepared statements).
      await runTimed(RAW_UNDICI, [mock.url, String(job.concurrency), '--count', String(job.concurrency * 4)]);
      await daemonBatch(manager, mock.url, Math.min(job.requests, job.concurrency * 4), model);
      for (let i = 0; i < rounds; i++) {
        for (const s of alternate(i, 'raw', 'ours')) {
          if (s === 'raw') await rawRun(job, mock, raw);
          else await daemonRun(job, manager, daemon, backends, mock, model, ours);
          // The requests table grows by each run; PostgreSQL here runs without autovacuum.
          await db.pool.query(`VACUUM ${manager.schema}.requests`).catch(() => {});
        }
      }
    } finally {
      await daemon.stop();
      await mock.close();
      await db.close();
    }
    const name =
      `${job.requests.toLocaleString('en-US')} × ${job.latencyMs >= 1000 ? `${job.latencyMs / 1000} s` : `${job.latencyMs} ms`}, ` +
      `${job.concurrency.toLocaleString('en-US')} in flight${job.label ? `, ${job.label}` : ''}`;
    const r = median(raw.seconds);
    const o = median(ours.seconds);
    const result =
      job.goal.kind === 'rate'
        ? `${fmt(r / o)} of raw's rate (goal ≥ ${job.goal.value}: ${r / o >= job.goal.value ? 'met' : 'NOT met'})`
        : `${fmt(o / r)}× raw's time (goal ≤ ${job.goal.value}×: ${o / r <= job.goal.value ? 'met' : 'NOT met'})`;
    rows.push(`| ${name} | ${spread(raw.seconds)} | ${spread(ours.seconds)} | ${result} |`);
    cpuRows.push(
      `| ${name} | ${fmt(median(raw.self), 0)} | ${fmt(median(raw.mock), 0)} | ${fmt(median(ours.self), 0)} | ${fmt(median(ours.pg), 0)} | ${fmt(median(ours.mock), 0)} |`,
    );
  }
  return {
    markdown: [
      '### Daemon throughput (claim → POST → store), three processes',
      '',
      'The mock upstream, the daemon (a long-lived `manager.run()`) and raw undici each run in a process of',
      `their own. Medians of ${rounds} alternating rounds (each run in brackets); the daemon is timed from the`,
      'batch’s creation to its end (PostgreSQL’s clock), raw undici from its first request to its last answer.',
      '',
      '| job | raw undici, no database | daemon | result |',
      '|---|---|---|---|',
      ...rows,
      '',
      'CPU per request, µs (medians): raw undici’s process and the mock it drove; the daemon’s process, its',
      'PostgreSQL backends and the mock it drove.',
      '',
      '| job | raw: process | raw: mock | daemon: process | daemon: PostgreSQL | daemon: mock |',
      '|---|---|---|---|---|---|',
      ...cpuRows,
    ].join('\n'),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rounds = process.argv[2] ? Number(process.argv[2]) : undefined;
  console.log((await benchDaemonThroughput({ rounds })).markdown);
}
