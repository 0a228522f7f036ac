import { createServer } from '../../server/server.js';
import { daemonConfigFor } from '../daemon-config.js';
import { openDatabase } from '../database.js';
import type { CommandContext } from '../main.js';
import { shutdownSignal } from '../signals.js';
import { resolveUpstream, withoutCredentials } from '../upstream.js';

/** `fusillade serve`: the Batch API server, with the daemon in the same process unless --no-daemon. */
export async function serveCommand({ settings, verbose }: CommandContext): Promise<number> {
  const shutdown = shutdownSignal();
  const upstream = await resolveUpstream(settings);
  try {
    const db = await openDatabase(settings, { log: (m) => console.error(m) });
    try {
      const server = await createServer({
        pool: db.pool,
        schema: db.schema,
        port: settings.port,
        host: settings.host,
        daemon: settings.daemon,
        routing: upstream.routing,
        daemonConfig: daemonConfigFor(settings, upstream.routing),
        allowPrivateWebhooks: settings.allowPrivateWebhooks,
        modelPrices: settings.modelPrices,
        completionWindows: settings.completionWindows.split(',').map((w) => w.trim()),
        ...(settings.metricsToken !== undefined ? { metricsToken: settings.metricsToken } : {}),
        headersTimeoutMs: settings.headersTimeoutMs,
        idleTimeoutMs: settings.idleTimeoutMs,
        ...(verbose
          ? { logger: (entry: Record<string, unknown>) => console.error(JSON.stringify(entry)) }
          : {}),
      });
      console.log(`fusillade serve: Batch API on ${server.url}/v1 (database: ${db.describe})`);
      console.log(`dashboard on ${server.url}/`);
      console.log(
        settings.daemon
          ? `daemon running; upstream ${upstream.url ? withoutCredentials(upstream.url) : '(per model, from the config file)'}${settings.upstream === 'mock' ? ' (built-in mock)' : ''}`
          : 'daemon off (--no-daemon): run `fusillade daemon` against the same database to send requests',
      );
      if (!upstream.url && !upstream.routing.models) {
        console.error(
          'warning: no --upstream: uploads are refused for models without an upstream in the config file',
        );
      }
      console.log('create an API key with `fusillade keys create --owner NAME`; Ctrl-C stops');
      const signal = await shutdown.signal;
      console.error(`fusillade serve: ${signal}, shutting down (in-flight requests are handed back)`);
      await server.close();
      return 0;
    } finally {
      await db.close();
    }
  } finally {
    shutdown.dispose();
    await upstream.close();
  }
}
