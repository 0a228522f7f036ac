import { normalizeBaseUrl, type RoutingConfig } from '../config/routing.js';
import type { DaemonConfig, UpstreamRoute, UpstreamRouter } from '../daemon/config.js';

export { normalizeBaseUrl, type RoutingConfig };

/**
 * A router for the daemon (and for the server at upload): the model's own entry, else the
 * default upstream, else undefined (the model cannot be routed: uploads refuse it).
 */
export function createUpstreamRouter(
  routing: RoutingConfig = {},
  env: NodeJS.ProcessEnv = process.env,
): UpstreamRouter {
  const fallback = routing.upstream ? normalizeBaseUrl(routing.upstream) : undefined;
  const routes = new Map<string, UpstreamRoute>();
  for (const [model, entry] of Object.entries(routing.models ?? {})) {
    const endpoint = entry.upstream ? normalizeBaseUrl(entry.upstream) : fallback;
    if (!endpoint) continue; // a limit alone does not make a model routable
    const apiKey =
      entry.apiKey ??
      (entry.apiKeyEnv ? env[entry.apiKeyEnv] : undefined) ??
      (entry.upstream ? undefined : routing.upstreamApiKey);
    routes.set(model, apiKey ? { endpoint, apiKey } : { endpoint });
  }
  const defaultRoute: UpstreamRoute | undefined = fallback
    ? routing.upstreamApiKey
      ? { endpoint: fallback, apiKey: routing.upstreamApiKey }
      : { endpoint: fallback }
    : undefined;
  return {
    route(model: string): UpstreamRoute | undefined {
      return routes.get(model) ?? defaultRoute;
    },
  };
}

/** The daemon's concurrency settings implied by the routing: per-model limits and the default. */
export function limitsFromRouting(
  routing: RoutingConfig = {},
): Pick<Partial<DaemonConfig>, 'modelConcurrencyLimits' | 'defaultModelConcurrency'> {
  const limits: Record<string, number> = {};
  for (const [model, entry] of Object.entries(routing.models ?? {})) {
    if (entry.limit !== undefined) limits[model] = entry.limit;
  }
  const out: Pick<Partial<DaemonConfig>, 'modelConcurrencyLimits' | 'defaultModelConcurrency'> = {};
  if (Object.keys(limits).length > 0) out.modelConcurrencyLimits = limits;
  if (routing.defaultLimit !== undefined) out.defaultModelConcurrency = routing.defaultLimit;
  return out;
}
