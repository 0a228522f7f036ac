import { parseCount } from '../../config/settings.js';
import { UsageError } from '../../config/usage-error.js';
import type { MockRateLimits } from '../../mock-upstream/rate-limits.js';
import { startMockUpstream } from '../../mock-upstream/server.js';
import type { CommandContext } from '../main.js';
import { shutdownSignal } from '../signals.js';

export async function mockUpstreamCommand({ settings, flags }: CommandContext): Promise<number> {
  const latencyMs = parseCount(String(flags.latencyMs ?? '0'), '--latency-ms');
  const optional = (name: string, flag: unknown) =>
    flag === undefined ? undefined : parseCount(String(flag), name);
  const rpm = optional('--rpm', flags.rpm);
  const tpm = optional('--tpm', flags.tpm);
  const style = String(flags.rateLimitHeaders ?? 'openai');
  if (style !== 'openai' && style !== 'anthropic' && style !== 'none') {
    throw new UsageError(
      `--rate-limit-headers must be openai, anthropic or none, got ${JSON.stringify(style)}`,
    );
  }
  const rateLimits: MockRateLimits | undefined =
    rpm !== undefined || tpm !== undefined
      ? {
          rpm,
          tpm,
          burstSeconds: optional('--burst-seconds', flags.burstSeconds),
          defaultMaxOutputTokens: optional('--default-max-tokens', flags.defaultMaxTokens),
          headers: style,
        }
      : undefined;
  const shutdown = shutdownSignal();
  // Not 8080: the mock usually runs beside `fusillade serve`.
  const mock = await startMockUpstream({
    port: flags.port ?? 9000,
    host: settings.host,
    latencyMs,
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
