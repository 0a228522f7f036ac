import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const SOURCE_ENTRY = join(ROOT, 'test', 'cli', 'support', 'cli-entry.ts');
export const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs');
export const SHIPPED_BIN = join(ROOT, 'bin', 'fusillade.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Run the built bin/fusillade.js (dist/) instead of the TypeScript source. */
  shipped?: boolean;
  /**
   * SIGKILL the child after this long: a backstop for a hung process, not a speed check. Default:
   * 240 s for runCli (a command run to completion), 15 min for startCli (servers and daemons that
   * live for a whole test file; its afterAll stops them).
   */
  timeoutMs?: number;
}

/** The environment without the developer's fusillade settings, so tests see only what they pass. */
function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('FUSILLADE_') || k === 'DATABASE_URL') continue;
    env[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Starts the CLI as a child process. */
export function startCli(
  args: string[],
  options: CliOptions = {},
): ChildProcess & { output: () => CliResult; exited: Promise<CliResult> } {
  const argv = options.shipped ? [SHIPPED_BIN, ...args] : ['--import', TSX, SOURCE_ENTRY, ...args];
  if (options.shipped && !existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
  }
  const child = spawn(process.execPath, argv, {
    cwd: options.cwd ?? ROOT,
    env: cleanEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => {
    stdout += d;
  });
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  const output = () => ({ code: child.exitCode, signal: child.signalCode, stdout, stderr });
  const exited = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 900_000);
  timer.unref();
  void exited.then(() => clearTimeout(timer));
  return Object.assign(child, { output, exited });
}

/** Runs the CLI to completion. */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return startCli(args, { timeoutMs: 240_000, ...options }).exited;
}

/** Waits until `predicate` holds (polling), for output a child process prints. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An OpenAI batch input file of `n` chat requests with custom ids req-1..req-n. */
export async function writeBatchInput(path: string, n: number, model = 'gpt-test'): Promise<void> {
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    lines.push(
      JSON.stringify({
        custom_id: `req-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model, messages: [{ role: 'user', content: `hello ${i}` }] },
      }),
    );
  }
  await writeFile(path, `${lines.join('\n')}\n`);
}

export function parseJsonl(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A loopback port nothing listens on (fetch refuses well-known "bad ports" such as 9). */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
