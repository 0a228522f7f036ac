/**
 * Bench (5): the daemon's memory while dispatching 100,000 requests (goal: RSS under 200 MB). The
 * daemon runs alone in a child process (bench/daemon-child.ts); its RSS is sampled from
 * /proc/<pid>/status every 100 ms. Baseline in the same run: the same process idle before the batch.
 * Standalone: `node --import tsx bench/daemon-memory.ts [requests]`.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startMockUpstream } from '../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';

const CHILD = fileURLToPath(new URL('./daemon-child.ts', import.meta.url));

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

export async function benchDaemonMemory(options: { requests?: number; limit?: number } = {}) {
  const n = options.requests ?? 100_000;
  const limit = options.limit ?? 64;
  const db = await createTestDb();
  const mock = await startMockUpstream({ record: false });
  const manager = db.manager({ logger: () => {} });
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, SCHEMA: db.schema, LIMIT: String(limit) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => l === 'ready' && resolve());
      child.once('exit', (code) => reject(new Error(`daemon child exited ${code}`)));
    });
    async function* templates() {
      for (let i = 0; i < n; i++) {
        yield {
          endpoint: mock.url,
          method: 'POST',
          path: '/v1/chat/completions',
          body: JSON.stringify({ model: 'mem', messages: [{ role: 'user', content: `hello ${i}` }] }),
          model: 'mem',
          apiKey: 'sk-bench',
          customId: `m-${i}`,
        };
      }
    }
    const fileId = await manager.createFileStream('mem.jsonl', null, templates());
    const idle = rssMb(child.pid!);
    const started = performance.now();
    const batchId = await manager.createBatch(fileId);
    let peak = idle;
    const samples: number[] = [];
    for (;;) {
      const rss = rssMb(child.pid!);
      samples.push(rss);
      if (rss > peak) peak = rss;
      const { rows } = await db.pool.query(
        `SELECT finished_at FROM ${manager.schema}.batches WHERE id = $1`,
        [batchId],
      );
      if (rows[0].finished_at) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const seconds = (performance.now() - started) / 1000;
    const { rows } = await db.pool.query(
      `SELECT count(*)::int AS n FROM ${manager.schema}.requests WHERE batch_id = $1 AND state = 'completed'`,
      [batchId],
    );
    const end = samples[samples.length - 1]!;
    return {
      markdown: [
        `### Daemon memory while dispatching ${n.toLocaleString('en-US')} requests (limit ${limit}, zero-latency mock)`,
        '',
        '| measure | RSS |',
        '|---|---|',
        `| baseline: the same daemon process, idle, before the batch | ${idle.toFixed(0)} MB |`,
        `| peak while dispatching | ${peak.toFixed(0)} MB |`,
        `| at the end | ${end.toFixed(0)} MB |`,
        '',
        `${rows[0].n.toLocaleString('en-US')} completed in ${seconds.toFixed(1)} s (${Math.round(n / seconds)} req/s). Goal peak < 200 MB: ${peak < 200 ? 'met' : 'NOT met'}.`,
      ].join('\n'),
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGKILL');
    await mock.close();
    await db.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const requests = process.argv[2] ? Number(process.argv[2]) : undefined;
  console.log((await benchDaemonMemory({ requests })).markdown);
}
