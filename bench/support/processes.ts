/**
 * Process plumbing for the benches that compare with raw undici (issue 10: an honest baseline): the
 * mock upstream, the baseline and fusillade each run in a process of their own, runs alternate, and
 * each figure is the median of several runs. CPU is split per process: a child's own time from
 * /proc (or from bench/children/cpu-report.mjs at its exit), PostgreSQL's from the /proc entries of
 * the backends that carry the child's application_name.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { PrefixCacheOptions, PrefixCacheStats } from '../../src/mock-upstream/prefix-cache.js';
import type { MockRateLimiter, MockRateLimits } from '../../src/mock-upstream/rate-limits.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
export const BIN = here('../../bin/fusillade.js');
export const RAW_UNDICI = here('../children/raw-undici.mjs');
const CPU_REPORT = here('../children/cpu-report.mjs');
const MOCK_CHILD = here('../children/mock-upstream.ts');
const DAEMON_CHILD = here('../children/daemon.ts');
/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const TICKS = 100;

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export const tag = (prefix: string): string => `${prefix}_${randomBytes(4).toString('hex')}`;

/** A process's user + system CPU in ms so far (0 once it is gone). */
export function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
  } catch {
    return 0;
  }
}

/**
 * CPU of the PostgreSQL backends whose application_name is `app`. sample() records each backend's
 * CPU so far (backends come and go with the pools); used() is the CPU since mark() (backends born
 * after the mark count from zero). A backend's CPU after the last sample before it exits is missed:
 * sample often, or while it lives.
 */
export class BackendCpu {
  private readonly base = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly app: string,
  ) {}

  async sample(): Promise<void> {
    const { rows } = await this.pool.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE application_name = $1',
      [this.app],
    );
    for (const { pid } of rows) this.last.set(pid, procCpuMs(pid));
  }

  /** Counts from now on: the CPU the backends alive now have used so far is not counted. */
  async mark(): Promise<void> {
    await this.sample();
    this.base.clear();
    for (const [pid, ms] of this.last) this.base.set(pid, ms);
  }

  /** Samples every `ms` until stop(). */
  every(ms: number): void {
    const tick = () => {
      this.sample()
        .catch(() => {})
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, ms);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.sample().catch(() => {});
  }

  /** CPU ms used by the backends since mark() (or since they started). */
  used(): number {
    let sum = 0;
    for (const [pid, ms] of this.last) sum += ms - (this.base.get(pid) ?? 0);
    return sum;
  }
}

/** Sends one IPC message and waits for the answer of the same type. */
function ask<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: { type: string }) => {
      if (msg.type !== type) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(msg as T);
    };
    const onExit = (code: number | null) => {
      child.off('message', onMessage);
      reject(new Error(`child exited (${code}) before answering ${type}`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.send({ type });
  });
}

function forkTs(path: string, env: Record<string, string>): ChildProcess {
  return fork(path, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

async function ready<T>(child: ChildProcess, what: string): Promise<T> {
  const [msg] = await Promise.race([
    once(child, 'message') as Promise<[T]>,
    once(child, 'exit').then(([code]) => {
      throw new Error(`${what} exited (${code}) at start`);
    }),
  ]);
  return msg;
}

export interface MockProcess {
  url: string;
  pid: number;
  cpuMs(): number;
  stats(): Promise<{
    received: number;
    inFlight: number;
    maxInFlight: number;
    /** With rate limits: the limiter's counts (src/mock-upstream/rate-limits.ts stats()). */
    rateLimits: ReturnType<MockRateLimiter['stats']> | null;
    /** With a prompt cache: its hits and misses (src/mock-upstream/prefix-cache.ts). */
    prefixCache: PrefixCacheStats | null;
  }>;
  reset(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The mock upstream (src/mock-upstream) in a process of its own, answering after `latencyMs`,
 * enforcing `rateLimits` when given, with a prompt cache when `prefixCache` is given.
 */
export async function startMockProcess(
  latencyMs: number,
  rateLimits?: MockRateLimits,
  answer?: 'usage' | 'no-usage',
  prefixCache?: PrefixCacheOptions,
): Promise<MockProcess> {
  const env: Record<string, string> = { LATENCY_MS: String(latencyMs) };
  if (prefixCache) env.PREFIX_CACHE = JSON.stringify(prefixCache);
  if (rateLimits) env.RATE_LIMITS = JSON.stringify(rateLimits);
  if (answer) env.ANSWER = answer;
  const child = forkTs(MOCK_CHILD, env);
  const { url } = await ready<{ url: string }>(child, 'mock upstream');
  return {
    url,
    pid: child.pid!,
    cpuMs: () => procCpuMs(child.pid!),
    stats: () => ask(child, 'stats'),
    reset: async () => {
      await ask(child, 'reset');
    },
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface DaemonProcess {
  id: string;
  pid: number;
  app: string;
  cpuMs(): Promise<number>;
  rssBytes(): Promise<number>;
  stop(): Promise<void>;
}

/** A library daemon (manager.run()) in a process of its own; its pool carries application_name `app`. */
export async function startDaemonProcess(options: {
  databaseUrl: string;
  schema: string;
  config: Record<string, unknown>;
  app?: string;
  poolMax?: number;
}): Promise<DaemonProcess> {
  const app = options.app ?? tag('bench_daemon');
  const child = forkTs(DAEMON_CHILD, {
    DATABASE_URL: options.databaseUrl,
    SCHEMA: options.schema,
    APP: app,
    CONFIG: JSON.stringify(options.config),
    POOL_MAX: String(options.poolMax ?? 10),
  });
  const { id } = await ready<{ id: string }>(child, 'daemon');
  return {
    id,
    pid: child.pid!,
    app,
    cpuMs: async () => {
      const u = await ask<{ user: number; system: number }>(child, 'cpu');
      return (u.user + u.system) / 1000;
    },
    rssBytes: async () => (await ask<{ rss: number }>(child, 'rss')).rss,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await ask(child, 'stopped').catch(() => {});
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface TimedRun {
  /** Wall time of the whole process, spawn to exit. */
  seconds: number;
  /** The process's own CPU (cpu-report.mjs), ms; NaN if it did not report. */
  cpuMs: number;
  stdout: string;
  stderr: string;
}

/** Runs `node [--import cpu-report] script args…` to completion and times it as a whole process. */
export async function runTimed(
  script: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<TimedRun> {
  const cpuFile = join(tmpdir(), `${tag('bench_cpu')}.json`);
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', CPU_REPORT, script, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env, BENCH_CPU_FILE: cpuFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const [code] = (await once(child, 'close')) as [number | null];
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`${script} ${args[0] ?? ''} exited ${code}: ${stderr.slice(-800)}`);
  let cpuMs = Number.NaN;
  try {
    const u = JSON.parse(readFileSync(cpuFile, 'utf8')) as { user: number; system: number };
    cpuMs = (u.user + u.system) / 1000;
  } catch {}
  rmSync(cpuFile, { force: true });
  return { seconds, cpuMs, stdout, stderr };
}

/** `a b b a a b …`: the order of the two sides in round `i`, so neither always runs first. */
export const alternate = <T>(i: number, a: T, b: T): [T, T] => (i % 4 === 0 || i % 4 === 3 ? [a, b] : [b, a]);
