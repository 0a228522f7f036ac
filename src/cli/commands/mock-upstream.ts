import type { MockRateLimits } from '../../mock-upstream/rate-limits.js';
import { startMockUpstream } from '../../mock-upstream/server.js';
import type { CommandContext } from '../main.js';
import { shutdownSignal } from '../signals.js';

export async function mockUpstreamCommand({ settings }: CommandContext): Promise<number> {
  const { mockRpm: rpm, mockTpm: tpm } = settings;
  const rateLimits: MockRateLimits | undefined =
    rpm !== undefined || tpm !== undefined
      ? {
          rpm,
          tpm,
          burstSeconds: settings.mockBurstSeconds,
          defaultMaxOutputTokens: settings.mockDefaultMaxTokens,
          headers: settings.mockRateLimitHeaders,
        }
      : undefined;
  const shutdown = shutdownSignal();
  const mock = await startMockUpstream({
    port: settings.mockPort,
    host: settings.host,
    latencyMs: settings.mockLatencyMs,
    record: false,
    recordBodies: false,
    rateLimits,
  });
  console.log(`mock upstream listening on ${mock.url} (use --upstream ${mock.url})`);
  if (rateLimits) {
    console.log(
      `rate limits per model: ${rpm ?? 'unlimited'} requests/min, ${tpm ?? 'unlimited'} tokens/min; counts at ${mock.url}/__mock/stats`,
    );
  }
  await shutdown.signal;
  shutdown.dispose();
  await mock.close();
  return 0;
}
