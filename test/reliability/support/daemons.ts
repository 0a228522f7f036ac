import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UpstreamRouter } from '../../../src/dispatch/config.js';
import { createUpstreamRouter } from '../../../src/dispatch/upstream-routing.js';
import { startCli } from '../../cli/support/cli.js';

/**
 * `fusillade daemon` child processes for the chaos suites (the real CLI, from the TypeScript source),
 * and a loopback TCP proxy in front of PostgreSQL that can cut every connection or refuse new ones.
 */

export type DaemonProcess = ReturnType<typeof startCli> & {
  /** The daemon's id, once it printed its "running" line. */
  daemonId: string;
};

export interface DaemonFleetOptions {
  databaseUrl: string;
  schema: string;
  upstream: string;
  upstreamApiKey: string;
  modelLimits: Record<string, number>;
  /** DaemonConfig numbers for the config file (short heartbeats, leases, timeouts). */
  daemon: Record<string, number>;
}

/** Starts and stops daemon processes sharing one schema. */
export class DaemonFleet {
  readonly all: DaemonProcess[] = [];
  private dir = '';
  private configPath = '';

  constructor(private readonly o: DaemonFleetOptions) {}

  /**
   * The fleet's routing, for the manager that creates the batches: a batch records its upstream and
   * key fingerprint when created, and the daemons claim only what they can send exactly there.
   */
  router(): UpstreamRouter {
    return createUpstreamRouter({ upstream: this.o.upstream, upstreamApiKey: this.o.upstreamApiKey });
  }

  private async ensureConfig(): Promise<void> {
    if (this.configPath) return;
    this.dir = await mkdtemp(join(tmpdir(), 'fusillade-chaos-'));
    this.configPath = join(this.dir, 'config.json');
    await writeFile(this.configPath, JSON.stringify({ daemon: this.o.daemon }));
  }

  /** Starts one daemon; resolves when it says it is running. */
  async start(): Promise<DaemonProcess> {
    await this.ensureConfig();
    const args = [
      'daemon',
      '--database-url',
      this.o.databaseUrl,
      '--schema',
      this.o.schema,
      '--upstream',
      this.o.upstream,
      '--config',
      this.configPath,
    ];
    for (const [model, n] of Object.entries(this.o.modelLimits)) args.push('--model-limit', `${model}=${n}`);
    // The key goes through the environment, as a user would pass it (never on the command line).
    const child = startCli(args, {
      env: { FUSILLADE_UPSTREAM_API_KEY: this.o.upstreamApiKey },
      timeoutMs: 600_000,
    }) as DaemonProcess;
    child.daemonId = '';
    this.all.push(child);
    const deadline = Date.now() + 180_000; // a loaded machine starts tsx processes slowly
    for (;;) {
      const m = /fusillade daemon ([0-9a-f-]{36}) running/.exec(child.output().stdout);
      if (m) {
        child.daemonId = m[1]!;
        return child;
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`daemon exited at start: ${child.output().stderr.slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error('daemon did not start within 180 s');
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  get running(): DaemonProcess[] {
    return this.all.filter((d) => d.exitCode === null && d.signalCode === null);
  }

  /** All stdout and stderr of every daemon started. */
  logs(): string {
    return this.all.map((d) => `${d.output().stdout}\n${d.output().stderr}`).join('\n');
  }

  /** SIGTERM everything still running (SIGKILL after a grace period), then remove the config. */
  async stopAll(): Promise<void> {
    await Promise.all(
      this.running.map(async (d) => {
        d.kill('SIGCONT');
        d.kill('SIGTERM');
        const timer = setTimeout(() => d.kill('SIGKILL'), 8000);
        await d.exited;
        clearTimeout(timer);
      }),
    );
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** A connection string for the daemons' own application_name, so the test can find their sessions. */
export function taggedUrl(base: string, tag: string, port?: number): string {
  const url = new URL(base);
  if (port !== undefined) url.host = `127.0.0.1:${port}`;
  url.searchParams.set('application_name', tag);
  return url.toString();
}

export const uniqueTag = (prefix: string): string => `${prefix}_${randomBytes(4).toString('hex')}`;

/**
 * A loopback TCP proxy in front of PostgreSQL. `hang()` drops every connection and then accepts new
 * ones without ever answering (a dead network); `down()` drops everything and refuses new
 * connections (the database restarting); `up()` forwards again on the same port.
 */
export class PgProxy {
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | undefined;
  private mode: 'forward' | 'hang' = 'forward';
  port = 0;

  constructor(private readonly target = { host: '127.0.0.1', port: 5432 }) {}

  private accept(client: net.Socket): void {
    this.sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => this.sockets.delete(client));
    if (this.mode === 'hang') return;
    const upstream = net.connect(this.target.port, this.target.host);
    this.sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    client.pipe(upstream).pipe(client);
  }

  private dropAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async up(): Promise<void> {
    this.mode = 'forward';
    this.dropAll(); // hung connections from hang() must not linger
    if (this.server) return;
    const server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  hang(): void {
    this.mode = 'hang';
    this.dropAll();
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.dropAll();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
