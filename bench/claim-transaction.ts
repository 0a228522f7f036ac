/**
 * Bench: what the claim's own transaction costs (src/daemon/pipe.ts, statement()): the daemon's
 * claim (claim.ts, 100 rows of one model) run as one autocommit statement against the same
 * statement inside `BEGIN; SET LOCAL statement_timeout = 15000` / claim / `COMMIT`, which lets
 * PostgreSQL cancel a claim the daemon gave up on. Both arms run on one connection, in alternating
 * rounds (A B B A …); the claimed rows are put back to pending on another connection after each
 * claim, untimed. Reported per claim, medians over the rounds: CPU of the claim connection's
 * backend (/proc, 10 ms ticks, so rounds are long), CPU of this process, and wall time (the last
 * is not load-robust: read it beside the load printed with it).
 * Standalone: `node --import tsx bench/claim-transaction.ts [rounds] [claims per round]`.
 */
import { loadavg } from 'node:os';
import { claimSql } from '../src/db/sql/queue/claim.js';
import { createTestDb } from '../test/support/db.js';
import { median, procCpuMs } from './support/processes.js';

const DAEMON = '00000000-0000-0000-0000-00000000c1a1';
const ROWS = 100;

async function main() {
  const rounds = Number(process.argv[2] ?? 8);
  const claims = Number(process.argv[3] ?? 300);
  const db = await createTestDb({ max: 3 });
  const s = `"${db.schema}"`;
  try {
    const m = db.manager({ logger: () => {} });
    const fileId = await m.createFile(
      'bench.jsonl',
      null,
      Array.from({ length: ROWS }, (_, i) => ({
        endpoint: 'http://127.0.0.1:9',
        method: 'POST',
        path: '/v1/chat/completions',
        body: JSON.stringify({ model: 'gpt-bench', messages: [{ role: 'user', content: `hello ${i}` }] }),
        model: 'gpt-bench',
        apiKey: '',
        customId: `c-${i}`,
      })),
    );
    const batchId = await m.createBatch(fileId);
    const { rows: routes } = await db.pool.query(
      `SELECT route_id FROM ${s}.batch_routes WHERE batch_id = $1`,
      [batchId],
    );
    await db.pool.query(`INSERT INTO ${s}.daemons (id, host, pid) VALUES ($1, 'bench', 0)`, [DAEMON]);
    await db.pool.query(
      `INSERT INTO ${s}.model_limits (model, concurrency) VALUES ('gpt-bench', 1000) ON CONFLICT DO NOTHING`,
    );
    await db.pool.query(
      `INSERT INTO ${s}.model_budgets (model, daemon_id, slots, wanted) VALUES ('gpt-bench', $1, 1000, 1000)`,
      [DAEMON],
    );
    const claim = {
      name: 'bench-claim',
      text: claimSql(s),
      values: [['gpt-bench'], [ROWS], [0], DAEMON, 600_000, [`{${routes.map((r) => r.route_id).join(',')}}`]],
    };
    const reset = db.pool;
    const client = await db.pool.connect();
    const { rows: pidRows } = await client.query('SELECT pg_backend_pid() AS pid');
    const pid: number = pidRows[0].pid;

    const once = async (txn: boolean) => {
      let n: number;
      if (txn) {
        await client.query('BEGIN; SET LOCAL statement_timeout = 15000');
        n = (await client.query(claim)).rowCount ?? 0;
        await client.query('COMMIT');
      } else {
        n = (await client.query(claim)).rowCount ?? 0;
      }
      if (n !== ROWS) throw new Error(`claimed ${n} rows, not ${ROWS}`);
    };
    const round = async (txn: boolean) => {
      let backend = 0;
      let proc = 0;
      let wall = 0;
      for (let i = 0; i < claims; i++) {
        const b0 = procCpuMs(pid);
        const p0 = process.cpuUsage();
        const w0 = performance.now();
        await once(txn);
        wall += performance.now() - w0;
        const p1 = process.cpuUsage(p0);
        proc += (p1.user + p1.system) / 1000;
        backend += procCpuMs(pid) - b0;
        await reset.query(
          `UPDATE ${s}.requests SET state = 'pending', daemon_id = NULL, claimed_at = NULL, started_at = NULL,
                  lease_expires_at = NULL, attempt = 0 WHERE batch_id = $1`,
          [batchId],
        );
      }
      return {
        backend: (backend * 1000) / claims,
        proc: (proc * 1000) / claims,
        wall: (wall * 1000) / claims,
      };
    };
    // Warm-up: the prepared statement's plans.
    await round(false);
    await round(true);
    const results = {
      autocommit: [] as Record<string, number>[],
      transaction: [] as Record<string, number>[],
    };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [false, true] : [true, false];
      for (const txn of order) {
        const got = await round(txn);
        (txn ? results.transaction : results.autocommit).push(got);
        console.log(
          `round ${r} ${txn ? 'transaction' : 'autocommit '}: backend ${got.backend.toFixed(0)} µs, process ${got.proc.toFixed(0)} µs, wall ${got.wall.toFixed(0)} µs per claim (load ${loadavg()[0]!.toFixed(1)})`,
        );
      }
    }
    for (const [arm, list] of Object.entries(results)) {
      const med = (k: string) => median(list.map((x) => x[k]!)).toFixed(0);
      console.log(
        `${arm}: medians per claim of ${ROWS} rows: backend ${med('backend')} µs, process ${med('proc')} µs, wall ${med('wall')} µs`,
      );
    }
    client.release();
  } finally {
    await db.close();
  }
}

await main();
