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
};

/** "https://api.example.com/v1/" → "https://api.example.com": templates add the /v1/... path. */
export function normalizeBaseUrl(url: string): string {
  let u = url.trim().replace(/\/+$/, '');
  if (u.endsWith('/v1')) u = u.slice(0, -3).replace(/\/+$/, '');
  return u;
}
