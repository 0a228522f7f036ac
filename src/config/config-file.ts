import { readFile } from 'node:fs/promises';
import type { DaemonConfig } from '../daemon/config.js';
import { DEFAULT_DAEMON_CONFIG } from '../daemon/config.js';
import { type RetryableStatuses, retryableStatusesProblem } from '../domain/retry.js';
import { UsageError } from './usage-error.js';

/** Per-model routing in a config file: its own upstream, key (by environment variable) and limit. */
export interface ModelEntry {
  upstream?: string;
  apiKeyEnv?: string;
  limit?: number;
}

/**
 * The JSON config file (`--config FILE` or FUSILLADE_CONFIG). Every field is optional; flags and
 * environment variables override it. Upstream keys are named by environment variable, not written
 * in the file.
 */
export interface ConfigFile {
  databaseUrl?: string;
  schema?: string;
  dataDir?: string;
  port?: number;
  host?: string;
  upstream?: string;
  upstreamApiKeyEnv?: string;
  models?: Record<string, ModelEntry>;
  defaultLimit?: number;
  server?: string;
  apiKeyEnv?: string;
  /**
   * Daemon tuning: any DaemonConfig number field (maxRetries, requestTimeoutMs, ...), and
   * `retryableStatuses` (a list of statuses replacing the defaults, or `{"add": [...], "remove": [...]}`).
   */
  daemon?: Partial<Record<keyof DaemonConfig, number>> & { retryableStatuses?: RetryableStatuses };
}

const STRING_FIELDS = [
  'databaseUrl',
  'schema',
  'dataDir',
  'host',
  'upstream',
  'upstreamApiKeyEnv',
  'server',
  'apiKeyEnv',
] as const;
const NUMBER_FIELDS = ['port', 'defaultLimit'] as const;
const KNOWN = new Set<string>([...STRING_FIELDS, ...NUMBER_FIELDS, 'models', 'daemon']);

export async function loadConfigFile(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return validateConfig(value, path);
}

/** Checks the shape of a parsed config file; the error names the offending field. */
export function validateConfig(value: unknown, path: string): ConfigFile {
  const bad = (message: string) => new UsageError(`config file ${path}: ${message}`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('must be a JSON object');
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!KNOWN.has(key)) throw bad(`unknown field "${key}" (known: ${[...KNOWN].join(', ')})`);
  }
  for (const key of STRING_FIELDS) {
    if (obj[key] !== undefined && typeof obj[key] !== 'string') throw bad(`"${key}" must be a string`);
  }
  for (const key of NUMBER_FIELDS) {
    if (obj[key] !== undefined && !isNonNegativeInt(obj[key])) throw bad(`"${key}" must be an integer >= 0`);
  }
  if (obj.models !== undefined) {
    if (obj.models === null || typeof obj.models !== 'object' || Array.isArray(obj.models)) {
      throw bad('"models" must be an object of model name → {upstream, apiKeyEnv, limit}');
    }
    for (const [model, entry] of Object.entries(obj.models as Record<string, unknown>)) {
      if (entry === null || typeof entry !== 'object') throw bad(`models["${model}"] must be an object`);
      const e = entry as Record<string, unknown>;
      for (const k of Object.keys(e)) {
        if (!['upstream', 'apiKeyEnv', 'limit'].includes(k))
          throw bad(`models["${model}"]: unknown field "${k}"`);
      }
      if (e.upstream !== undefined && typeof e.upstream !== 'string')
        throw bad(`models["${model}"].upstream must be a string`);
      if (e.apiKeyEnv !== undefined && typeof e.apiKeyEnv !== 'string')
        throw bad(`models["${model}"].apiKeyEnv must be a string`);
      if (e.limit !== undefined && !isNonNegativeInt(e.limit))
        throw bad(`models["${model}"].limit must be an integer >= 0`);
    }
  }
  if (obj.daemon !== undefined) {
    if (obj.daemon === null || typeof obj.daemon !== 'object') throw bad('"daemon" must be an object');
    for (const [k, v] of Object.entries(obj.daemon as Record<string, unknown>)) {
      if (k === 'retryableStatuses') {
        const problem = retryableStatusesProblem(v);
        if (problem !== null) throw bad(`daemon.retryableStatuses ${problem}`);
        continue;
      }
      const known = k in DEFAULT_DAEMON_CONFIG || k === 'leaseMs';
      if (!known || k === 'modelConcurrencyLimits') throw bad(`daemon: unknown setting "${k}"`);
      if (!isNonNegativeInt(v)) throw bad(`daemon.${k} must be an integer >= 0`);
    }
  }
  return obj as ConfigFile;
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}
