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

/** Any HTTP answer (even 404) proves the upstream is reachable; a connection error does not. */
export async function checkUpstreamReachable(url: string): Promise<void> {
  try {
    const res = await fetch(url, { method: 'HEAD', signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel().catch(() => {});
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new UsageError(`cannot reach the upstream ${withoutCredentials(url)}: ${why}`, 1);
  }
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
