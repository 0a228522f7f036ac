import type { Settings } from '../config/settings.js';
import { UsageError } from '../config/usage-error.js';
import type { RoutingConfig } from '../dispatch/upstream-routing.js';

export interface ResolvedUpstream {
  routing: RoutingConfig;
  /** The default upstream's base URL (the mock's, with --upstream mock), for templates and messages. */
  url: string | undefined;
  /** Stable name of the upstream for run's resume key: "mock" rather than the mock's random port. */
  identity: string;
  close(): Promise<void>;
}

/**
 * Starts the in-process mock for `--upstream mock`; otherwise passes the routing through. The mock's
 * modules load only for the mock: 28–38 ms of CPU (measured alone, 2-core machine) that `run`
 * against a real upstream spent before its first request (issue 10).
 */
export async function resolveUpstream(settings: Settings): Promise<ResolvedUpstream> {
  if (settings.upstream === 'mock') {
    const { startMockUpstream } = await import('../mock-upstream/server.js');
    const mock = await startMockUpstream({ port: 0, host: '127.0.0.1', record: false, recordBodies: false });
    return {
      // Recorded as "mock" in batches' routes: any process's built-in mock can serve them.
      routing: { ...settings.routing, upstream: 'mock', mockUrl: mock.url },
      url: mock.url,
      identity: 'mock',
      close: () => mock.close(),
    };
  }
  const url = settings.routing.upstream;
  return { routing: settings.routing, url, identity: url ?? 'per-model', close: async () => {} };
}

/**
 * Any HTTP answer (even 404) proves the upstream is reachable; a connection error does not. The HEAD
 * goes through node:http(s), not `fetch`: the first `fetch` loads Node's bundled undici, and the
 * probe cost 57–67 ms of CPU that way against 14–19 ms (each alone in a fresh process, 2-core
 * machine), all of it before `run`'s first request.
 */
export async function checkUpstreamReachable(url: string, timeoutMs = 10_000): Promise<void> {
  try {
    await head(url, timeoutMs);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.name === 'AbortError' ? `no answer within ${timeoutMs / 1000} s` : (e.code ?? e.message);
    throw new UsageError(`cannot reach the upstream ${withoutCredentials(url)}: ${why}`, 1);
  }
}

/** One HEAD on a connection of its own (closed after the answer); resolves on any answer. */
async function head(url: string, timeoutMs: number): Promise<void> {
  const target = new URL(url);
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    throw new Error(`${target.protocol} is not http: or https:`);
  }
  // A probe needs no credentials: any answer, 401 included, will do.
  target.username = '';
  target.password = '';
  const { request } = target.protocol === 'https:' ? await import('node:https') : await import('node:http');
  await new Promise<void>((resolve, reject) => {
    const req = request(
      target,
      { method: 'HEAD', agent: false, signal: AbortSignal.timeout(timeoutMs) },
      (res) => {
        res.resume();
        resolve();
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A URL for messages: user and password (if someone put a key there) are dropped. */
export function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid URL)';
  }
}
