import { UsageError } from '../../config/usage-error.js';
import { PostgresRequestManager } from '../../manager/request-manager.js';
import { daemonConfigFor } from '../daemon-config.js';
import { openDatabase } from '../database.js';
import type { CommandContext } from '../main.js';
import { shutdownSignal } from '../signals.js';
import { checkUpstreamReachable, resolveUpstream, withoutCredentials } from '../upstream.js';

/** `fusillade daemon`: only the daemon, for extra replicas next to a `fusillade serve --no-daemon`. */
export async function daemonCommand({ settings }: CommandContext): Promise<number> {
  const modelUpstreams = Object.values(settings.routing.models ?? {}).some((m) => m.upstream);
  if (settings.upstream === undefined && !modelUpstreams) {
    throw new UsageError('--upstream is required: a base URL (e.g. https://api.openai.com) or "mock"');
  }
  const shutdown = shutdownSignal();
  const upstream = await resolveUpstream(settings);
  try {
    if (upstream.url) await checkUpstreamReachable(upstream.url);
    const db = await openDatabase(settings, { log: (m) => console.error(m) });
    try {
      const manager = new PostgresRequestManager(db.pool, {
        schema: db.schema,
        ...daemonConfigFor(settings, upstream.routing),
        webhooks: { allowPrivate: settings.allowPrivateWebhooks },
      });
      const daemon = await manager.run();
      console.log(
        `fusillade daemon ${daemon.id} running (database: ${db.describe}; upstream ${upstream.url ? withoutCredentials(upstream.url) : 'per model'})`,
      );
      const ended = await Promise.race([shutdown.signal, daemon.done.then(() => 'done' as const)]);
      if (ended === 'done') {
        console.error('fusillade daemon: stopped unexpectedly');
        return 1;
      }
      console.error(`fusillade daemon: ${ended}, handing in-flight requests back`);
      await daemon.stop();
      return 0;
    } finally {
      await db.close();
    }
  } finally {
    shutdown.dispose();
    await upstream.close();
  }
}
