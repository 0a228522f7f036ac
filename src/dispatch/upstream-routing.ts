import type { RoutingConfig } from '../config/routing.js';
import { MOCK_UPSTREAM, normalizeBaseUrl } from '../domain/upstream-route.js';
import type { DaemonConfig, UpstreamRoute, UpstreamRouter } from './config.js';

export { normalizeBaseUrl, type RoutingConfig };

/**
 * A router for the daemon (and for the server at upload and batch creation): the model's own entry,
 * else the default upstream, else undefined (the model cannot be routed: uploads refuse it).
 */
export function createUpstreamRouter(
  routing: RoutingConfig = {},
  env: NodeJS.ProcessEnv = process.env,
): UpstreamRouter {
  const target = (upstream: string): Pick<UpstreamRoute, 'endpoint' | 'name'> =>
    upstream === MOCK_UPSTREAM && routing.mockUrl
      ? { endpoint: normalizeBaseUrl(routing.mockUrl), name: MOCK_UPSTREAM }
      : { endpoint: normalizeBaseUrl(upstream) };
  const fallback = routing.upstream ? target(routing.upstream) : undefined;
  const withKey = (t: Pick<UpstreamRoute, 'endpoint' | 'name'>, apiKey: string | undefined): UpstreamRoute =>
    apiKey ? { ...t, apiKey } : { ...t };
  const routes = new Map<string, UpstreamRoute>();
  for (const [model, entry] of Object.entries(routing.models ?? {})) {
    const t = entry.upstream ? target(entry.upstream) : fallback;
    if (!t) continue; // a limit alone does not make a model routable
    const apiKey =
      entry.apiKey ??
      (entry.apiKeyEnv ? env[entry.apiKeyEnv] : undefined) ??
      (entry.upstream ? undefined : routing.upstreamApiKey);
    routes.set(model, withKey(t, apiKey));
  }
  const defaultRoute = fallback ? withKey(fallback, routing.upstreamApiKey) : undefined;
  const all = new Map<string, UpstreamRoute>();
  for (const r of [...routes.values(), ...(defaultRoute ? [defaultRoute] : [])]) {
    all.set(`${r.name ?? r.endpoint}\u0000${r.apiKey ?? ''}`, r);
  }
  return {
    route(model: string): UpstreamRoute | undefined {
      return routes.get(model) ?? defaultRoute;
    },
    routes(): UpstreamRoute[] {
      return [...all.values()];
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
