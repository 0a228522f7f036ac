/**
 * Bench (3): wake-up latency: an idle daemon (10 s poll, so only LISTEN/NOTIFY can wake it) and a
 * batch of one request created; time from createBatch's return to the request reaching the
 * upstream. Baseline in the same run: one bare NOTIFY → LISTEN round trip on the same database.
 * Standalone: `node --import tsx bench/daemon-wakeup.ts`.
 */
import pg from 'pg';
import { startMockUpstream } from '../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL } from '../test/support/db.js';

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

async function notifyBaseline(trials: number): Promise<number[]> {
  const listener = new pg.Client({ connectionString: TEST_DATABASE_URL });
  const sender = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await listener.connect();
  await sender.connect();
  await listener.query('LISTEN bench_wakeup');
  const out: number[] = [];
  for (let i = 0; i < trials; i++) {
    const got = new Promise<void>((resolve) => listener.once('notification', () => resolve()));
    const t0 = performance.now();
    await sender.query(`NOTIFY bench_wakeup, '${i}'`);
    await got;
    out.push(performance.now() - t0);
  }
  await listener.end();
  await sender.end();
  return out.sort((a, b) => a - b);
}

export async function benchDaemonWakeup(options: { trials?: number } = {}) {
  const trials = options.trials ?? 20;
  const db = await createTestDb();
  const mock = await startMockUpstream();
  try {
    const manager = db.manager({ pollIntervalMs: 10_000, logger: () => {} });
    const daemon = await manager.run();
    const delays: number[] = [];
    try {
      for (let i = 0; i < trials; i++) {
        await new Promise((r) => setTimeout(r, 150)); // let it fall asleep
        const fileId = await manager.createFile('wake.jsonl', null, [
          {
            endpoint: mock.url,
            method: 'POST',
            path: '/v1/chat/completions',
            body: '{"model":"wake","messages":[]}',
            model: 'wake',
            apiKey: 'sk-bench',
            customId: `wake-${i}`,
          },
        ]);
        const arrived = new Promise<number>((resolve) => {
          mock.setBehaviour((req) => {
            if (req.customId === `wake-${i}`) resolve(performance.now());
            return { kind: 'ok' };
          });
        });
        const t0 = performance.now();
        await manager.createBatch(fileId);
        delays.push((await arrived) - t0);
      }
    } finally {
      await daemon.stop();
    }
    delays.sort((a, b) => a - b);
    const base = await notifyBaseline(trials);
    return {
      markdown: [
        `### Wake-up latency (idle daemon, poll every 10 s; ${trials} batches)`,
        '',
        '| measure | p50 | p90 | max |',
        '|---|---|---|---|',
        `| createBatch returns → first request at the upstream | ${pct(delays, 50).toFixed(1)} ms | ${pct(delays, 90).toFixed(1)} ms | ${delays[delays.length - 1]!.toFixed(1)} ms |`,
        `| baseline: bare NOTIFY → LISTEN round trip | ${pct(base, 50).toFixed(1)} ms | ${pct(base, 90).toFixed(1)} ms | ${base[base.length - 1]!.toFixed(1)} ms |`,
        '',
        `Goal < 100 ms: ${pct(delays, 90) < 100 ? 'met' : 'NOT met'} (p90).`,
      ].join('\n'),
    };
  } finally {
    await mock.close();
    await db.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log((await benchDaemonWakeup()).markdown);
}
