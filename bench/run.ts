/**
 * `npm run bench`: runs every bench in BENCHES in order and writes BENCHMARKS.md (each section
 * carries its own baseline measured in the same run). `npm run bench -- claim wakeup` runs only the
 * benches whose names contain one of the words, and replaces just their sections in BENCHMARKS.md.
 * To add a bench: export an async function returning { markdown } and add one line below. Benches
 * marked optIn (too big for every run) run only when named: `npm run bench -- big-database`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { benchBatchResults } from './batch-results.js';
import { benchBigDatabase } from './big-database.js';
import { benchClaimLatency } from './claim-latency.js';
import { benchCliRun } from './cli-run.js';
import { benchCompressUnderDispatch } from './compress-under-dispatch.js';
import { benchCreateFileStream } from './create-file-stream.js';
import { benchDaemonMemory } from './daemon-memory.js';
import { benchDaemonThroughput } from './daemon-throughput.js';
import { benchDaemonWakeup } from './daemon-wakeup.js';
import { benchDashboardQueries } from './dashboard-queries.js';
import { benchInflightMemory } from './inflight-memory.js';
import { benchPartitioning } from './partitioning.js';
import { benchPromptPrefix } from './prompt-prefix.js';
import { benchRateLimits } from './rate-limits.js';
import { benchServerTransfer } from './server-transfer.js';
import { benchStorage } from './storage.js';
import { benchUsageAccounting } from './usage-accounting.js';

interface Bench {
  name: string;
  run: () => Promise<{ markdown: string }>;
  /** Runs only when named on the command line. */
  optIn?: boolean;
}

const BENCHES: Bench[] = [
  { name: 'create-file-stream', run: () => benchCreateFileStream() },
  { name: 'daemon-throughput', run: () => benchDaemonThroughput() },
  { name: 'daemon-wakeup', run: () => benchDaemonWakeup() },
  { name: 'claim-latency', run: () => benchClaimLatency() },
  { name: 'daemon-memory', run: () => benchDaemonMemory() },
  { name: 'inflight-memory', run: () => benchInflightMemory() },
  { name: 'cli-run', run: () => benchCliRun() },
  { name: 'server-transfer', run: () => benchServerTransfer() },
  { name: 'dashboard-queries', run: async () => ({ markdown: await benchDashboardQueries() }) },
  { name: 'batch-results', run: () => benchBatchResults() },
  { name: 'rate-limits', run: () => benchRateLimits() },
  { name: 'storage', run: () => benchStorage() },
  { name: 'compress-under-dispatch', run: () => benchCompressUnderDispatch() },
  { name: 'usage-accounting', run: () => benchUsageAccounting() },
  { name: 'prompt-prefix', run: () => benchPromptPrefix() },
  { name: 'big-database', run: () => benchBigDatabase(), optIn: true },
  { name: 'partitioning', run: () => benchPartitioning(), optIn: true },
];

const OUT = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));
const begin = (name: string) => `<!-- bench:${name} -->`;
const end = (name: string) => `<!-- /bench:${name} -->`;

function header(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return (
    [
      '# Benchmarks',
      '',
      'Written by `npm run bench` (bench/run.ts). Every section states its baseline, measured in the same run on the',
      'same machine. The development machine has 2 cores shared with other work, so absolute figures are noisy:',
      'compare each result with its own baseline.',
      '',
    ].join('\n') +
    `\nLast full header refresh: ${new Date().toISOString()} · Node ${process.version} · ${os.cpus().length} × ${cpu}\n`
  );
}

async function main(): Promise<void> {
  const filters = process.argv.slice(2);
  const selected =
    filters.length > 0
      ? BENCHES.filter((b) => filters.some((f) => b.name.includes(f)))
      : BENCHES.filter((b) => !b.optIn);
  let doc = existsSync(OUT) ? readFileSync(OUT, 'utf8') : header();
  if (filters.length === 0) {
    // A full run starts afresh but keeps the last figures of the opt-in benches it does not run.
    const kept = BENCHES.filter((b) => b.optIn).map((b) => {
      const a = doc.indexOf(begin(b.name));
      const z = doc.indexOf(end(b.name));
      return a >= 0 && z > a ? `\n${doc.slice(a, z + end(b.name).length)}\n` : '';
    });
    doc = header() + kept.join('');
  }
  for (const bench of selected) {
    process.stderr.write(`bench ${bench.name}…\n`);
    const started = Date.now();
    let body: string;
    try {
      body = (await bench.run()).markdown;
    } catch (err) {
      body = `### ${bench.name}\n\nFailed in this run: ${(err as Error).message}`;
    }
    const section = `${begin(bench.name)}\n${body}\n\n_Measured ${new Date().toISOString()} in ${((Date.now() - started) / 1000).toFixed(0)} s._\n${end(bench.name)}`;
    // Re-read: another bench run (a colleague's, one section) may have written the file meanwhile.
    if (filters.length > 0 && existsSync(OUT)) doc = readFileSync(OUT, 'utf8');
    const a = doc.indexOf(begin(bench.name));
    const b = doc.indexOf(end(bench.name));
    doc =
      a >= 0 && b > a
        ? doc.slice(0, a) + section + doc.slice(b + end(bench.name).length)
        : `${doc}\n${section}\n`;
    writeFileSync(OUT, doc);
    process.stderr.write(`${body}\n\n`);
  }
  // Keep the file as the repository's formatter wants it (tables aligned), so `biome check .` stays clean.
  try {
    const biome = fileURLToPath(new URL('../node_modules/.bin/biome', import.meta.url));
    execFileSync(biome, ['format', '--write', OUT], { stdio: 'ignore' });
  } catch {
    process.stderr.write('could not format BENCHMARKS.md with biome\n');
  }
}

await main();
