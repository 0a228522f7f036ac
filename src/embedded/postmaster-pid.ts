import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What PostgreSQL's lock file `postmaster.pid` says about a running server. */
export interface PostmasterInfo {
  pid: number;
  port: number;
  /** "ready", "starting", "stopping"... (line 8 of the file). */
  status: string;
}

/** Parses `<pgdata>/postmaster.pid`; undefined when there is none (no server, or a clean stop). */
export async function readPostmasterPid(pgdata: string): Promise<PostmasterInfo | undefined> {
  let text: string;
  try {
    text = await readFile(join(pgdata, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return { pid, port, status: (lines[7] ?? '').trim() };
}

/**
 * Whether `pid` is a live process, and (on Linux) a PostgreSQL one — serving `pgdata` when given: a
 * recycled pid, even another cluster's postmaster, is not ours.
 */
export async function isPostgresAlive(pid: number, pgdata?: string): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: alive but owned by another account (the server runs as `postgres` when we are root).
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
    if (comm !== 'postgres') return false;
    if (pgdata === undefined) return true;
    // The postmaster keeps its command line (`postgres -D <pgdata> ...`).
    const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return args.includes(pgdata);
  } catch {
    return true; // no /proc (macOS): trust the signal check
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `pid` has exited; false on timeout. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isPostgresAlive(pid))) return true;
    await sleep(25);
  }
  return false;
}

/** Fast shutdown (SIGINT: aborts open transactions, then a clean checkpoint), SIGQUIT if that hangs. */
export async function stopPostmaster(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    return false;
  }
  if (await waitForExit(pid, 30_000)) return true;
  process.kill(pid, 'SIGQUIT');
  return waitForExit(pid, 5_000);
}
