/**
 * Bench: `fusillade run` on a 20,000-line batch file against a zero-latency loopback upstream, as a
 * whole process (node start, store the file, dispatch with the daemon, write the output JSONL),
 * on PostgreSQL and on the embedded default, against the same requests fired raw with undici
 * (64 in flight, no database) in the same run.
 * Standalone: `node --import tsx bench/cli-run.ts [lines]` (uses the built bin: `npm run build`).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Pool } from 'undici';
import { stopEmbeddedServer } from '../src/embedded/embedded-postgres.js';
import { startMockUpstream } from '../src/mock-upstream/server.js';

export interface CliRunOptions {
  lines?: number;
  /** Requests in flight, for the raw baseline and the run's --default-limit. */
  concurrency?: number;
  databaseUrl?: string;
}

export interface CliRunResult {
  markdown: string;
  rawSeconds: number;
  postgresSeconds: number;
  embeddedSeconds: number;
}

const BIN = fileURLToPath(new URL('../bin/fusillade.js', import.meta.url));

async function writeInput(path: string, lines: number): Promise<void> {
  const out = createWriteStream(path);
  for (let i = 1; i <= lines; i++) {
    const line = `{"custom_id":"req-${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-bench","messages":[{"role":"user","content":"hello ${i}"}]}}\n`;
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** The baseline: every line POSTed with undici's Pool, `concurrency` in flight, answers written to a file. */
async function rawUndici(
  input: string,
  output: string,
  upstream: string,
  concurrency: number,
): Promise<number> {
  const started = performance.now();
  const pool = new Pool(upstream, { connections: concurrency, pipelining: 1 });
  const out = createWriteStream(output);
  const lines = createInterface({ input: createReadStream(input), crlfDelay: Number.POSITIVE_INFINITY });
  const inFlight = new Set<Promise<void>>();
  for await (const text of lines) {
    if (!text) continue;
    const line = JSON.parse(text) as { custom_id: string; url: string; body: unknown };
    const p = (async () => {
      const res = await pool.request({
        method: 'POST',
        path: line.url,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(line.body),
      });
      const body = await res.body.text();
      out.write(
        `{"custom_id":${JSON.stringify(line.custom_id)},"response":{"status_code":${res.statusCode},"body":${body}}}\n`,
      );
    })();
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= concurrency) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  out.end();
  await once(out, 'finish');
  await pool.close();
  return (performance.now() - started) / 1000;
}

/** Runs the shipped CLI to completion; returns its wall time in seconds. */
async function timedCli(args: string[], cwd: string, phases?: string[]): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`fusillade ${args[0]} exited ${code}: ${stderr.slice(-500)}`);
  // `run --verbose` reports each phase on stderr as "<phase>: <seconds> s".
  for (const m of stderr.matchAll(/^(store the input|send the requests|write the results): ([\d.]+) s$/gm)) {
    phases?.push(`${m[1]} ${m[2]} s`);
  }
  return (performance.now() - started) / 1000;
}

async function countLines(path: string): Promise<number> {
  return (await readFile(path, 'utf8')).split('\n').filter((l) => l !== '').length;
}

export async function benchCliRun(options: CliRunOptions = {}): Promise<CliRunResult> {
  const lines = options.lines ?? 20_000;
  const concurrency = options.concurrency ?? 64;
  const databaseUrl =
    options.databaseUrl ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const dir = await mkdtemp(join(tmpdir(), 'fusillade-bench-cli-'));
  await chmod(dir, 0o755); // as root, the embedded server's account must reach its data directory
  const input = join(dir, 'in.jsonl');
  await writeInput(input, lines);
  const mock = await startMockUpstream({ record: false, recordBodies: false });
  const schema = `bench_cli_${randomBytes(4).toString('hex')}`;
  const dataDir = join(dir, '.fusillade');
  const runArgs = (output: string) => [
    '--verbose',
    'run',
    input,
    '-o',
    output,
    '--upstream',
    mock.url,
    '--default-limit',
    String(concurrency),
  ];
  try {
    const rawBefore = await rawUndici(input, join(dir, 'raw.jsonl'), mock.url, concurrency);
    const pgPhases: string[] = [];
    const postgresSeconds = await timedCli(
      [...runArgs(join(dir, 'pg.jsonl')), '--database-url', databaseUrl, '--schema', schema],
      dir,
      pgPhases,
    );
    // The embedded server's one-time initdb is timed apart; the run is timed on a warm data dir.
    const initSeconds = await timedCli(['migrate', '--data-dir', dataDir], dir);
    const embeddedPhases: string[] = [];
    const embeddedSeconds = await timedCli(
      [...runArgs(join(dir, 'embedded.jsonl')), '--data-dir', dataDir],
      dir,
      embeddedPhases,
    );
    // The machine is shared: the baseline is measured before and after the runs, and averaged.
    const rawAfter = await rawUndici(input, join(dir, 'raw.jsonl'), mock.url, concurrency);
    const rawSeconds = (rawBefore + rawAfter) / 2;
    for (const name of ['raw.jsonl', 'pg.jsonl', 'embedded.jsonl']) {
      const n = await countLines(join(dir, name));
      if (n !== lines) throw new Error(`${name} has ${n} lines, expected ${lines}`);
    }
    const rate = (s: number) => Math.round(lines / s).toLocaleString('en-US');
    const ratio = (s: number) =>
      `${((rawSeconds / s) * 100).toFixed(0)}% (goal ≥ 50%: ${rawSeconds / s >= 0.5 ? 'met' : 'NOT met'})`;
    const markdown = [
      `### CLI: \`fusillade run\`, ${lines.toLocaleString('en-US')} lines, zero-latency loopback upstream, ${concurrency} in flight`,
      '',
      'Whole process, wall time: node start, store the file, dispatch with the in-process daemon, write the output JSONL.',
      '',
      '| run | seconds | requests/s | vs raw undici |',
      '|---|---|---|---|',
      `| raw undici Pool, no database (baseline: mean of ${rawBefore.toFixed(2)} s before and ${rawAfter.toFixed(2)} s after the runs) | ${rawSeconds.toFixed(2)} | ${rate(rawSeconds)} | 100% |`,
      `| \`fusillade run --database-url\` (PostgreSQL server) | ${postgresSeconds.toFixed(2)} | ${rate(postgresSeconds)} | ${ratio(postgresSeconds)} |`,
      `| \`fusillade run\` (embedded PostgreSQL, warm data dir) | ${embeddedSeconds.toFixed(2)} | ${rate(embeddedSeconds)} | ${ratio(embeddedSeconds)} |`,
      '',
      `Phases (\`run --verbose\`): PostgreSQL server: ${pgPhases.join(', ')}; embedded: ${embeddedPhases.join(', ')}.`,
      'The rest of each run is process start, database connection and migration check. Dispatch is the',
      "daemon's claim → POST → store loop (see the daemon throughput section): the CLI adds the upload and the",
      'output file around it.',
      '',
      'Before slot budgets (commit 80a503e), this bench on the same machine minutes apart: 7.66 s (39%) and',
      '7.75 s (38%) against raw undici 2.97 s.',
      '',
      'Before the daemon’s CPU cuts of commits c21bc3c, 1b3fc0b and 723e268 (commit dd72255: writes built by',
      'spreading, a timer per attempt, Pool.request with a Readable body, the writes sent as 13 escaped',
      'arrays), this bench minutes apart: 6.18 s (47%) with the PostgreSQL server and 6.05 s (48%) embedded,',
      'against raw undici 2.90 s. Two runs after the cuts: 56–59% with the server, 57–62% embedded.',
      '',
      `One-time creation of the embedded data directory (initdb + migrate, \`fusillade migrate\`): ${initSeconds.toFixed(2)} s.`,
      '',
    ].join('\n');
    return { markdown, rawSeconds, postgresSeconds, embeddedSeconds };
  } finally {
    await mock.close();
    await stopEmbeddedServer(dataDir).catch(() => {});
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await pool.end();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const lines = Number(process.argv[2] ?? 20_000);
  benchCliRun({ lines }).then(
    (r) => console.log(r.markdown),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
