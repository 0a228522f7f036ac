import type { ModelRateLimit } from '../domain/rate-wallet.js';
import { type ConfigFile, loadConfigFile } from './config-file.js';
import { type Origin, resolveValues } from './resolve.js';
import { normalizeBaseUrl, type RoutingConfig } from './routing.js';
import {
  type CommandName,
  type DaemonSettings,
  type SettingName,
  type SettingValues,
  settingSpecs,
} from './schema.js';

export { redactUrl } from './resolve.js';

/** Options as commander hands them over (attribute names; values already checked by the flag parsers). */
export type CliFlags = { config?: string } & Record<string, unknown>;

/**
 * What a command receives: every setting it takes (flag > environment > config file > default), and
 * what follows from them: the upstream routing and the daemon's settings.
 */
export interface Settings extends SettingValues {
  /** The upstream routing of serve, run and daemon ("mock" is filled in when the mock starts). */
  routing: RoutingConfig;
  /** The daemon settings given by a flag, variable or the config file (the rest keep their defaults). */
  daemonConfig: Partial<DaemonSettings>;
  /** Where each setting's value came from. */
  origins: Partial<Record<SettingName, Origin>>;
}

/**
 * Resolves the settings of `command` (all settings without one) from flags, the environment and
 * the config file (`--config` or FUSILLADE_CONFIG).
 */
export async function resolveSettings(
  flags: CliFlags,
  env: NodeJS.ProcessEnv = process.env,
  command?: CommandName,
): Promise<Settings> {
  const { values: located } = resolveValues({ flags, env, file: {} }, command);
  const configPath = located.config;
  const file: ConfigFile = configPath ? await loadConfigFile(configPath) : {};
  const { values, origins } = resolveValues(
    { flags, env, file, ...(configPath ? { filePath: configPath } : {}) },
    command,
  );
  const daemonConfig: Record<string, unknown> = {};
  for (const [name, spec] of settingSpecs()) {
    const origin = origins[name];
    if (spec.daemon && origin !== undefined && origin !== 'default') daemonConfig[name] = values[name];
  }
  const rateLimits = rateLimitsOf(values);
  if (rateLimits) daemonConfig.modelRateLimits = rateLimits;
  return {
    ...values,
    server: values.server.replace(/\/+$/, '').replace(/\/v1$/, ''),
    routing: routingOf(values, origins),
    daemonConfig: daemonConfig as Partial<DaemonSettings>,
    origins,
  };
}

/** The daemon's modelRateLimits from --model-rpm, --model-tpm and models.*.{rpm,tpm,adaptiveConcurrency}. */
function rateLimitsOf(values: SettingValues): Record<string, ModelRateLimit> | null {
  const limits: Record<string, ModelRateLimit> = {};
  const entry = (model: string) => {
    limits[model] ??= {};
    return limits[model];
  };
  for (const [model, n] of Object.entries(values.modelRpm ?? {})) entry(model).rpm = n;
  for (const [model, n] of Object.entries(values.modelTpm ?? {})) entry(model).tpm = n;
  for (const [model, on] of Object.entries(values.modelAdaptiveConcurrency ?? {})) {
    entry(model).adaptiveConcurrency = on;
  }
  return Object.keys(limits).length > 0 ? { ...values.modelRateLimits, ...limits } : null;
}

function routingOf(values: SettingValues, origins: Settings['origins']): RoutingConfig {
  const routing: RoutingConfig = {};
  if (values.upstream !== undefined && values.upstream !== 'mock') {
    routing.upstream = normalizeBaseUrl(values.upstream);
  }
  if (values.upstreamApiKey !== undefined) routing.upstreamApiKey = values.upstreamApiKey;
  const models: NonNullable<RoutingConfig['models']> = {};
  const entry = (model: string) => {
    models[model] ??= {};
    return models[model];
  };
  for (const [model, url] of Object.entries(values.modelUpstreams ?? {})) entry(model).upstream = url;
  for (const [model, key] of Object.entries(values.modelApiKeys ?? {})) entry(model).apiKey = key;
  for (const [model, n] of Object.entries(values.modelConcurrencyLimits ?? {})) entry(model).limit = n;
  if (Object.keys(models).length > 0) routing.models = models;
  const defaultLimit = origins.defaultModelConcurrency;
  if (defaultLimit !== undefined && defaultLimit !== 'default') {
    routing.defaultLimit = values.defaultModelConcurrency;
  }
  return routing;
}
