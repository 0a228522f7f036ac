/**
 * Where each model's requests go. `upstream` (with `upstreamApiKey`) is the default for every
 * model; `models` gives a model its own base URL, key (directly or by environment variable name)
 * and concurrency limit. Keys live only here, in memory: rows store no upstream keys.
 */
export type RoutingConfig = {
  upstream?: string;
  upstreamApiKey?: string;
  models?: Record<string, { upstream?: string; apiKeyEnv?: string; apiKey?: string; limit?: number }>;
  defaultLimit?: number;
  /** The address of this process's built-in mock, for upstreams named "mock" (recorded as "mock"). */
  mockUrl?: string;
};

export { normalizeBaseUrl } from '../domain/upstream-route.js';
