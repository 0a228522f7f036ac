import type { DaemonConfig } from '../daemon/config.js';
import { normalizeBaseUrl, type RoutingConfig } from '../server/upstream-routing.js';
import { type ConfigFile, loadConfigFile } from './config-file.js';
import { UsageError } from './usage-error.js';

/** Options as commander hands them over: strings, all optional (defaults are applied here). */
export interface CliFlags {
  config?: string;
  databaseUrl?: string;
  schema?: string;
  dataDir?: string;
  port?: number;
  host?: string;
  upstream?: string;
  upstreamApiKey?: string;
  modelLimit?: Record<string, number>;
  defaultLimit?: number;
  /** false with --no-daemon */
  daemon?: boolean;
  server?: string;
  apiKey?: string;
  metricsToken?: string;
}

/** Everything a command needs, resolved with precedence flags > environment > config file > defaults. */
export interface Settings {
  /** Undefined: the embedded PostgreSQL in `dataDir`. */
  databaseUrl?: string;
  schema: string;
  dataDir: string;
  port: number;
  host: string;
  /** "mock" starts the built-in mock upstream in-process; its URL is filled in then. */
  upstream?: string;
  routing: RoutingConfig;
  daemon: boolean;
  daemonConfig: Partial<DaemonConfig>;
  server: string;
  apiKey?: string;
  /** `serve`: when set, /metrics requires `Authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
}

export const DEFAULTS = {
  schema: 'fusillade',
  dataDir: '.fusillade',
  port: 8080,
  host: '127.0.0.1',
  server: 'http://127.0.0.1:8080',
};

/** Environment variables read (flags win over them; they win over the config file). */
export const ENV = {
  config: 'FUSILLADE_CONFIG',
  databaseUrl: 'DATABASE_URL',
  schema: 'FUSILLADE_SCHEMA',
  dataDir: 'FUSILLADE_DATA_DIR',
  port: 'FUSILLADE_PORT',
  host: 'FUSILLADE_HOST',
  upstream: 'FUSILLADE_UPSTREAM',
  upstreamApiKey: 'FUSILLADE_UPSTREAM_API_KEY',
  defaultLimit: 'FUSILLADE_DEFAULT_LIMIT',
  server: 'FUSILLADE_SERVER',
  apiKey: 'FUSILLADE_API_KEY',
  metricsToken: 'FUSILLADE_METRICS_TOKEN',
} as const;

export async function resolveSettings(
  flags: CliFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Settings> {
  const configPath = flags.config ?? nonEmpty(env[ENV.config]);
  const file: ConfigFile = configPath ? await loadConfigFile(configPath) : {};
  const pick = <T>(
    flag: T | undefined,
    envName: string,
    fromFile: T | undefined,
    parse: (s: string) => T,
  ) => {
    if (flag !== undefined) return flag;
    const e = nonEmpty(env[envName]);
    return e !== undefined ? parse(e) : fromFile;
  };
  const str = (s: string) => s;
  const upstream = pick(flags.upstream, ENV.upstream, file.upstream, str);
  if (upstream !== undefined && upstream !== 'mock') checkHttpUrl('--upstream', upstream);
  const upstreamApiKey =
    pick(flags.upstreamApiKey, ENV.upstreamApiKey, undefined, str) ??
    (file.upstreamApiKeyEnv ? nonEmpty(env[file.upstreamApiKeyEnv]) : undefined);
  const defaultLimit = pick(flags.defaultLimit, ENV.defaultLimit, file.defaultLimit, (s) =>
    parseCount(s, ENV.defaultLimit),
  );

  const models: NonNullable<RoutingConfig['models']> = {};
  for (const [model, entry] of Object.entries(file.models ?? {})) {
    if (entry.upstream) checkHttpUrl(`models["${model}"].upstream`, entry.upstream);
    models[model] = { ...entry };
  }
  for (const [model, limit] of Object.entries(flags.modelLimit ?? {})) {
    models[model] = { ...models[model], limit };
  }
  const routing: RoutingConfig = {};
  if (upstream !== undefined && upstream !== 'mock') routing.upstream = normalizeBaseUrl(upstream);
  if (upstreamApiKey !== undefined) routing.upstreamApiKey = upstreamApiKey;
  if (Object.keys(models).length > 0) routing.models = models;
  if (defaultLimit !== undefined) routing.defaultLimit = defaultLimit;

  const databaseUrl = pick(flags.databaseUrl, ENV.databaseUrl, file.databaseUrl, str);
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new UsageError(
      `--database-url must be a postgres:// URL, got ${JSON.stringify(redactUrl(databaseUrl))}`,
    );
  }
  const schema = pick(flags.schema, ENV.schema, file.schema, str) ?? DEFAULTS.schema;
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new UsageError(`--schema must be lowercase letters, digits and _, got ${JSON.stringify(schema)}`);
  }
  const server = pick(flags.server, ENV.server, file.server, str) ?? DEFAULTS.server;
  checkHttpUrl('--server', server);
  const apiKey =
    pick(flags.apiKey, ENV.apiKey, undefined, str) ??
    (file.apiKeyEnv ? nonEmpty(env[file.apiKeyEnv]) : undefined);

  const settings: Settings = {
    schema,
    dataDir: pick(flags.dataDir, ENV.dataDir, file.dataDir, str) ?? DEFAULTS.dataDir,
    port: pick(flags.port, ENV.port, file.port, (s) => parsePort(s, ENV.port)) ?? DEFAULTS.port,
    host: pick(flags.host, ENV.host, file.host, str) ?? DEFAULTS.host,
    routing,
    daemon: flags.daemon !== false,
    daemonConfig: { ...(file.daemon ?? {}) } as Partial<DaemonConfig>,
    server: server.replace(/\/+$/, '').replace(/\/v1$/, ''),
  };
  if (databaseUrl !== undefined) settings.databaseUrl = databaseUrl;
  if (upstream !== undefined) settings.upstream = upstream;
  if (apiKey !== undefined) settings.apiKey = apiKey;
  // Like the keys, a secret: from the flag or the environment, never from the config file.
  const metricsToken = pick(flags.metricsToken, ENV.metricsToken, undefined, str);
  if (metricsToken !== undefined && metricsToken.trim() === '') {
    throw new UsageError('--metrics-token must not be empty (leave it out to keep /metrics open)');
  }
  if (metricsToken !== undefined) settings.metricsToken = metricsToken;
  return settings;
}

/** Commander parsers: they reject bad values with a one-line message naming the flag. */
export function parseCount(value: string, name = 'value'): number {
  if (!/^\d+$/.test(value.trim()))
    throw new UsageError(`${name} must be a whole number >= 0, got ${JSON.stringify(value)}`);
  return Number(value);
}

export function parsePort(value: string, name = '--port'): number {
  const n = /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!(n >= 0 && n <= 65535))
    throw new UsageError(`${name} must be a port number (0-65535), got ${JSON.stringify(value)}`);
  return n;
}

/** `--model-limit MODEL=N`, repeatable: accumulates into a map. */
export function parseModelLimit(
  value: string,
  previous: Record<string, number> = {},
): Record<string, number> {
  const eq = value.lastIndexOf('=');
  const model = eq > 0 ? value.slice(0, eq) : '';
  const limit = eq > 0 ? value.slice(eq + 1) : '';
  if (!model || !/^\d+$/.test(limit)) {
    throw new UsageError(
      `--model-limit must look like MODEL=N (e.g. gpt-4o-mini=32), got ${JSON.stringify(value)}`,
    );
  }
  return { ...previous, [model]: Number(limit) };
}

function checkHttpUrl(name: string, value: string): void {
  let ok = false;
  try {
    const u = new URL(value);
    ok = u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    ok = false;
  }
  if (!ok)
    throw new UsageError(
      `${name} must be an http(s) URL${name === '--upstream' ? ' or "mock"' : ''}, got ${JSON.stringify(value)}`,
    );
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

/** A database URL with its password masked, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}
