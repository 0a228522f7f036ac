import * as v from 'valibot';
import { type ConfigFile, fileKeyOf, quoteKey, readFilePath } from './config-file.js';
import {
  type CommandName,
  filePaths,
  flagAttribute,
  flagName,
  SETTINGS,
  type SettingName,
  type SettingSpec,
  type SettingValues,
  settingSpecs,
} from './schema.js';
import { UsageError } from './usage-error.js';

/** Where a setting's value came from. */
export type Origin = 'flag' | 'env' | 'file' | 'default';

export interface Sources {
  /** commander's parsed options (attribute names: defaultLimit, modelLimit, daemon, …). */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  /** The validated config file ({} without one). */
  file: ConfigFile;
  /** The config file's name, for messages. */
  filePath?: string;
}

export interface Resolved {
  values: SettingValues;
  /** Settings that have a value, by the source that gave it. */
  origins: Partial<Record<SettingName, Origin>>;
}

/**
 * Every setting the command takes (all of them without `command`), each from the first source that
 * gives it: flag > environment > config file > default. Throws a UsageError naming the setting as
 * the user wrote it (the flag, the variable, the file's key) when a value is not valid.
 */
export function resolveValues(sources: Sources, command?: CommandName): Resolved {
  const values: Record<string, unknown> = {};
  const origins: Partial<Record<SettingName, Origin>> = {};
  for (const [name, spec] of settingSpecs()) {
    // A setting the command does not take keeps its default (so every defaulted value is there).
    const taken = command === undefined || spec.global === true || spec.commands.includes(command);
    const found = !taken
      ? undefined
      : spec.perModel
        ? resolveMap(spec, sources)
        : resolveScalar(spec, sources);
    if (found) {
      values[name] = found.value;
      origins[name] = found.origin;
    } else if (spec.default !== undefined) {
      values[name] = spec.default;
      origins[name] = 'default';
    }
  }
  return { values: values as SettingValues, origins };
}

type Found = { value: unknown; origin: Origin } | undefined;

function resolveScalar(spec: SettingSpec, s: Sources): Found {
  if (spec.flag) {
    const given = s.flags[flagAttribute(spec.flag)];
    // commander sets a --no-x option's value to true unless it is given.
    const negatable = spec.flag.startsWith('--no-');
    if (given !== undefined && !(negatable && given === true)) {
      return { value: checkValue(spec, given, flagName(spec.flag)), origin: 'flag' };
    }
  }
  if (spec.env) {
    const text = nonEmpty(s.env[spec.env]);
    if (text !== undefined)
      return { value: checkValue(spec, spec.kind.fromText(text), spec.env), origin: 'env' };
  }
  let found: Found;
  let foundPath = '';
  for (const path of filePaths(spec)) {
    const raw = readFilePath(s.file, path);
    if (raw === undefined) continue;
    const value = spec.secret
      ? fromNamedVariable(spec, s.env, raw as string, path)
      : checkValue(spec, raw, fileWhere(s, path));
    if (found && found.value !== value) {
      throw new UsageError(
        `${fileWhere(s, foundPath)} and "${path}" disagree (${JSON.stringify(found.value)} and ${JSON.stringify(value)}): give one of them`,
      );
    }
    if (!found && value !== undefined) {
      found = { value, origin: 'file' };
      foundPath = path;
    }
  }
  return found;
}

/** A per-model map: the file's models, then the flag's entries model by model. */
function resolveMap(spec: SettingSpec, s: Sources): Found {
  const map: Record<string, unknown> = {};
  let origin: Origin | undefined;
  for (const path of filePaths(spec)) {
    const entries = (readFilePath(s.file, path) ?? {}) as Record<string, unknown>;
    for (const [model, raw] of Object.entries(entries)) {
      const value = spec.secret
        ? fromNamedVariable(spec, s.env, raw as string, fileKeyOf(path, model))
        : checkValue(spec, raw, fileWhere(s, fileKeyOf(path, model)));
      if (value === undefined) continue;
      map[model] = value;
      origin = 'file';
    }
  }
  const given = spec.flag ? s.flags[flagAttribute(spec.flag)] : undefined;
  if (given !== undefined) {
    for (const [model, raw] of Object.entries(given as Record<string, unknown>)) {
      map[model] = checkValue(spec, raw, `${flagName(spec.flag!)} for ${model}`);
      origin = 'flag';
    }
  }
  return origin ? { value: map, origin } : undefined;
}

/** A secret named by the config file: the value of the environment variable it names, if set. */
function fromNamedVariable(
  spec: SettingSpec,
  env: NodeJS.ProcessEnv,
  variable: string,
  path: string,
): unknown {
  const text = nonEmpty(env[variable]);
  return text === undefined
    ? undefined
    : checkValue(spec, spec.kind.fromText(text), `${variable} (named by ${path})`);
}

function fileWhere(s: Sources, path: string): string {
  return `config file ${s.filePath ?? ''}: ${quoteKey(path)}`;
}

/**
 * Checks one value against its setting's kind; the message names `where` (flag, variable or file
 * key) and, except for secrets, shows the value (with any URL password masked).
 */
export function checkValue(spec: SettingSpec, raw: unknown, where: string): unknown {
  const result = v.safeParse(spec.kind.schema, raw);
  if (result.success) return result.output;
  const got = spec.secret
    ? ''
    : `, got ${typeof raw === 'string' ? JSON.stringify(redactUrl(raw)) : JSON.stringify(raw)}`;
  throw new UsageError(`${where} must be ${spec.kind.expected}${got}`);
}

/** A flag's text as its setting's value (commander's argParser); throws a UsageError naming the flag. */
export function parseFlagText(name: SettingName, text: string): unknown {
  const spec: SettingSpec = SETTINGS[name];
  return checkValue(spec, spec.kind.fromText(text), flagName(spec.flag!));
}

/** One `MODEL=VALUE` of a repeatable per-model flag, added to the map of the previous ones. */
export function parseModelEntry(
  name: SettingName,
  text: string,
  previous: Record<string, unknown> = {},
): Record<string, unknown> {
  const spec: SettingSpec = SETTINGS[name];
  const flag = flagName(spec.flag!);
  const eq = text.lastIndexOf('=');
  if (eq <= 0) {
    const what = /<model=([^>]+)>/.exec(spec.flag!)?.[1]?.toUpperCase() ?? 'VALUE';
    throw new UsageError(`${flag} must look like MODEL=${what}, got ${JSON.stringify(text)}`);
  }
  const model = text.slice(0, eq);
  return {
    ...previous,
    [model]: checkValue(spec, spec.kind.fromText(text.slice(eq + 1)), `${flag} for ${model}`),
  };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

/** A URL with its password masked, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}
