import { parseCount } from '../../config/settings.js';
import { startMockUpstream } from '../../mock-upstream/server.js';
import type { CommandContext } from '../main.js';
import { shutdownSignal } from '../signals.js';

export async function mockUpstreamCommand({ settings, flags }: CommandContext): Promise<number> {
  const latencyMs = parseCount(String(flags.latencyMs ?? '0'), '--latency-ms');
  const shutdown = shutdownSignal();
  // Not 8080: the mock usually runs beside `fusillade serve`.
  const mock = await startMockUpstream({
    port: flags.port ?? 9000,
    host: settings.host,
    latencyMs,
    record: false,
    recordBodies: false,
  });
  console.log(`mock upstream listening on ${mock.url} (use --upstream ${mock.url})`);
  await shutdown.signal;
  shutdown.dispose();
  await mock.close();
  return 0;
}
