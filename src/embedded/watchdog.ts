import { spawn } from 'node:child_process';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { isPostgresAlive, readPostmasterPid, sleep, stopPostmaster } from './postmaster-pid.js';

/**
 * The embedded server's watchdog: stops PostgreSQL once no fusillade process is attached to it, so
 * a `kill -9` of the last one does not leave the server running for ever.
 *
 * Every attached process holds one presence connection (application_name PRESENCE_APP) for its
 * whole life; the kernel closes a killed process's socket and PostgreSQL ends that backend, so the
 * presence count is the number of live attached processes whatever killed the others. The watchdog
 * is a detached Node process (its own process group: a Ctrl-C or a kill of the process that started
 * it does not reach it) holding its own connection (WATCHDOG_APP, not counted). It polls the count
 * every POLL_MS and stops the server after EMPTY_POLLS polls in a row found none, having seen one
 * at least once; it exits when the server goes away (the last process stopped it as usual).
 * The grace of EMPTY_POLLS polls leaves room for a process that has found the server but not yet
 * connected; one arriving in the instant between the last poll and the stop gets a connection error
 * and starts the server again on its next try.
 *
 * Any attaching process starts one when it sees none (a server started before watchdogs existed,
 * or whose watchdog was killed); two racing leave two watchdogs, which is harmless.
 */

/** application_name of the one connection each attached process holds for its whole life. */
export const PRESENCE_APP = 'fusillade-presence';
/** application_name of the watchdog's connection. */
export const WATCHDOG_APP = 'fusillade-watchdog';

export const POLL_MS = 1000;
export const EMPTY_POLLS = 3;

/** Environment variables the watchdog process reads (not arguments: a command line is world-readable). */
export const WATCHDOG_URL_ENV = 'FUSILLADE_WATCHDOG_URL';
export const WATCHDOG_PGDATA_ENV = 'FUSILLADE_WATCHDOG_PGDATA';

/** The watchdog's state between polls. */
export interface WatchState {
  /** A presence connection was seen at least once. */
  seen: boolean;
  /** Polls in a row that found no presence connection (after one was seen). */
  empty: number;
}

export const INITIAL_WATCH: WatchState = { seen: false, empty: 0 };

/** The state after a poll that counted `attached` processes, and whether to stop the server now. */
export function afterPoll(state: WatchState, attached: number): { state: WatchState; stop: boolean } {
  if (attached > 0) return { state: { seen: true, empty: 0 }, stop: false };
  if (!state.seen) return { state, stop: false };
  const empty = state.empty + 1;
  return { state: { seen: true, empty }, stop: empty >= EMPTY_POLLS };
}

/** Starts a watchdog for the server at `url` unless one is connected to it already. */
export async function ensureWatchdog(client: pg.Client, url: string, pgdata: string): Promise<void> {
  const { rows } = await client.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
    [WATCHDOG_APP],
  );
  if ((rows[0]?.n ?? 0) > 0) return;
  const self = fileURLToPath(import.meta.url);
  // watchdog-process.js beside this file (watchdog-process.ts when run from source, under the
  // same loader flags as this process).
  const script = join(dirname(self), `watchdog-process${extname(self)}`);
  // The loader flags (tsx under tests), not a debugger's: its port is the parent's.
  const flags = process.execArgv.filter((a) => !a.startsWith('--inspect') && !a.startsWith('--debug'));
  const child = spawn(process.execPath, [...flags, script], {
    detached: true,
    stdio: 'ignore',
    env: { ...process.env, [WATCHDOG_URL_ENV]: url, [WATCHDOG_PGDATA_ENV]: pgdata },
  });
  child.on('error', () => {}); // no watchdog: the server then stops only with its last process
  child.unref();
}

/** The watchdog's loop (in its own process): returns when the server is gone or stopped. */
export async function watch(url: string, pgdata: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: WATCHDOG_APP });
  client.on('error', () => {});
  await client.connect();
  // Spawned by a process attached at that moment: its presence counts as seen, so a first poll
  // that finds everyone already gone (killed while this process was starting) still stops the server.
  let state: WatchState = { seen: true, empty: 0 };
  for (;;) {
    await sleep(POLL_MS);
    let attached: number;
    try {
      const { rows } = await client.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [PRESENCE_APP],
      );
      attached = rows[0]?.n ?? 0;
    } catch {
      return; // the server is gone (stopped by its last process)
    }
    const next = afterPoll(state, attached);
    state = next.state;
    if (next.stop) {
      await client.end().catch(() => {});
      const running = await readPostmasterPid(pgdata);
      if (running && (await isPostgresAlive(running.pid, pgdata))) await stopPostmaster(running.pid);
      return;
    }
  }
}
