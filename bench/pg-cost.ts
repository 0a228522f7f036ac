/**
 * Bench (opt-in): PostgreSQL's cost per request of one `fusillade run --database-url` of the
 * 20,000 × 0 ms job at 64 in flight (mock upstream in its own process), per statement, in figures
 * the machine's load does not move: calls, shared buffer hits and WAL bytes per request
 * (pg_stat_statements, diffed around the run, statements naming the run's fresh schema), beside
 * execution time and the backends' CPU per request (BackendCpu), which load does move.
 *
 * Compares two builds of the bin, alternating (a b b a …), each run in a fresh migrated schema
 * (migrated by its own bin, untimed), medians per side:
 *
 *   node --import tsx bench/pg-cost.ts ROUNDS BIN_A BIN_B [LINES]
 *
 * e.g. BIN_A = /work/main/bin/fusillade.js (base), BIN_B = bin/fusillade.js (the change).
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { alternate, BackendCpu, median, runTimed, startMockProcess, tag } from './support/processes.js';

interface StatementCost {
  calls: number;
  ms: number;
  hits: number;
  wal: number;
}

interface RunCost {
  seconds: number;
  pgCpuUs: number;
  selfCpuUs: number;
  load: number;
  statements: Map<string, StatementCost>;
}

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A statement's label: its text with the schema name cut and whitespace squeezed, first 70 chars. */
const label = (query: string, schema: string) =>
  query.replaceAll(`"${schema}".`, '').replaceAll(`${schema}.`, '').replace(/\s+/g, ' ').trim().slice(0, 70);

async function snapshot(pool: pg.Pool, schema: string): Promise<Map<string, StatementCost>> {
  const { rows } = await pool.query<{
    query: string;
    calls: string;
    ms: number;
    hits: string;
    wal: string;
  }>(
    `SELECT query, calls, total_exec_time AS ms, shared_blks_hit AS hits, wal_bytes AS wal
       FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'`,
    [schema],
  );
  const out = new Map<string, StatementCost>();
  for (const r of rows) {
    const key = label(r.query, schema);
    const prev = out.get(key) ?? { calls: 0, ms: 0, hits: 0, wal: 0 };
    out.set(key, {
      calls: prev.calls + Number(r.calls),
      ms: prev.ms + r.ms,
      hits: prev.hits + Number(r.hits),
      wal: prev.wal + Number(r.wal),
    });
  }
  return out;
}

function diff(after: Map<string, StatementCost>, before: Map<string, StatementCost>) {
  const out = new Map<string, StatementCost>();
  for (const [k, a] of after) {
    const b = before.get(k) ?? { calls: 0, ms: 0, hits: 0, wal: 0 };
    const d = { calls: a.calls - b.calls, ms: a.ms - b.ms, hits: a.hits - b.hits, wal: a.wal - b.wal };
    if (d.calls > 0) out.set(k, d);
  }
  return out;
}

async function oneRun(
  bin: string,
  input: string,
  output: string,
  lines: number,
  mockUrl: string,
  pool: pg.Pool,
): Promise<RunCost> {
  const schema = tag('pgcost_bench');
  const app = tag('pgcost_run');
  const url = new URL(DATABASE_URL);
  url.searchParams.set('application_name', app);
  const db = ['--database-url', url.toString(), '--schema', schema];
  try {
    await runTimed(bin, ['migrate', ...db]);
    const before = await snapshot(pool, schema);
    const backends = new BackendCpu(pool, app);
    backends.every(100);
    const load = loadavg()[0]!;
    const run = await runTimed(bin, [
      'run',
      input,
      '-o',
      output,
      '--upstream',
      mockUrl,
      '--default-limit',
      '64',
      ...db,
    ]);
    await backends.stop();
    const statements = diff(await snapshot(pool, schema), before);
    return {
      seconds: run.seconds,
      pgCpuUs: (backends.used() * 1000) / lines,
      selfCpuUs: (run.cpuMs * 1000) / lines,
      load,
      statements,
    };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
  }
}

function report(name: string, runs: RunCost[], lines: number): string {
  const out: string[] = [];
  const m = (f: (r: RunCost) => number) => median(runs.map(f));
  out.push(
    `## ${name}: ${runs.length} runs, median ${m((r) => r.seconds).toFixed(2)} s, PostgreSQL CPU ${m((r) => r.pgCpuUs).toFixed(0)} µs/request (${runs.map((r) => r.pgCpuUs.toFixed(0)).join(', ')}), process ${m((r) => r.selfCpuUs).toFixed(0)} µs, load ${runs.map((r) => r.load.toFixed(1)).join(', ')}`,
  );
  const keys = new Set(runs.flatMap((r) => [...r.statements.keys()]));
  const rows = [...keys].map((k) => {
    const s = (f: (c: StatementCost) => number) =>
      median(runs.map((r) => f(r.statements.get(k) ?? { calls: 0, ms: 0, hits: 0, wal: 0 })));
    return { k, calls: s((c) => c.calls), ms: s((c) => c.ms), hits: s((c) => c.hits), wal: s((c) => c.wal) };
  });
  rows.sort((a, b) => b.hits - a.hits);
  const total = (f: (c: StatementCost) => number) =>
    median(runs.map((r) => [...r.statements.values()].reduce((t, c) => t + f(c), 0)));
  out.push(
    `total: hits/request ${(total((c) => c.hits) / lines).toFixed(1)}, WAL bytes/request ${(total((c) => c.wal) / lines).toFixed(0)}, exec ms ${total((c) => c.ms).toFixed(0)}, calls ${total((c) => c.calls)}`,
  );
  out.push('calls | exec ms | hits/req | WAL B/req | statement');
  for (const r of rows.slice(0, 14)) {
    out.push(
      `${r.calls} | ${r.ms.toFixed(0)} | ${(r.hits / lines).toFixed(2)} | ${(r.wal / lines).toFixed(0)} | ${r.k}`,
    );
  }
  return out.join('\n');
}

async function main() {
  const [roundsArg, binA, binB, linesArg] = process.argv.slice(2);
  if (!roundsArg || !binA || !binB) {
    throw new Error('usage: bench/pg-cost.ts ROUNDS BIN_A BIN_B [LINES]');
  }
  const rounds = Number(roundsArg);
  const lines = Number(linesArg ?? 20_000);
  const dir = await mkdtemp(join(tmpdir(), 'pgcost-bench-'));
  const input = join(dir, 'in.jsonl');
  const out = createWriteStream(input);
  for (let i = 1; i <= lines; i++) {
    out.write(
      `{"custom_id":"req-${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-bench","messages":[{"role":"user","content":"hello ${i}"}]}}\n`,
    );
  }
  out.end();
  await once(out, 'finish');
  const mock = await startMockProcess(0);
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  const sides = { a: [] as RunCost[], b: [] as RunCost[] };
  try {
    for (let i = 0; i < rounds; i++) {
      for (const side of alternate<'a' | 'b'>(i, 'a', 'b')) {
        const r = await oneRun(
          side === 'a' ? binA : binB,
          input,
          join(dir, 'out.jsonl'),
          lines,
          mock.url,
          pool,
        );
        sides[side].push(r);
        process.stderr.write(
          `round ${i} ${side}: ${r.seconds.toFixed(2)} s, pg ${r.pgCpuUs.toFixed(0)} µs/req, load ${r.load.toFixed(1)}\n`,
        );
      }
    }
    console.log(report(`A ${binA}`, sides.a, lines));
    console.log();
    console.log(report(`B ${binB}`, sides.b, lines));
  } finally {
    await pool.end();
    await mock.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
