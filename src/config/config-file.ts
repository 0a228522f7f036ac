import { readFile } from 'node:fs/promises';
import * as v from 'valibot';
import { envName } from './kinds.js';
import { filePaths, type SettingName, type SettingSpec, settingSpecs } from './schema.js';
import { UsageError } from './usage-error.js';

/**
 * The JSON config file (`--config FILE` or FUSILLADE_CONFIG). Its shape is generated from the
 * settings' `file` paths (schema.ts): every key is optional, unknown keys are refused, secrets appear
 * only as the names of environment variables that hold them.
 */
export type ConfigFile = Record<string, unknown>;

/** A node of the file's shape: a setting's value (leaf), or an object of named keys or of model names ('*'). */
interface ShapeNode {
  leaf?: { name: SettingName; spec: SettingSpec };
  children: Map<string, ShapeNode>;
}

function buildShape(): ShapeNode {
  const root: ShapeNode = { children: new Map() };
  for (const [name, spec] of settingSpecs()) {
    for (const path of filePaths(spec)) {
      let node = root;
      for (const segment of path.split('.')) {
        let next = node.children.get(segment);
        if (!next) {
          next = { children: new Map() };
          node.children.set(segment, next);
        }
        node = next;
      }
      if (node.leaf || node.children.size > 0) throw new Error(`settings: file path ${path} is used twice`);
      node.leaf = { name, spec };
    }
  }
  return root;
}

function leafSchema(spec: SettingSpec): v.GenericSchema {
  return spec.secret ? envName().schema : spec.kind.schema;
}

/** The valibot schema of a node's value (not optional: the parent makes its keys optional). */
function nodeSchema(node: ShapeNode): v.GenericSchema {
  if (node.leaf) return leafSchema(node.leaf.spec);
  const any = node.children.get('*');
  if (any) {
    if (node.children.size > 1) throw new Error('settings: "*" cannot sit beside named keys in a file path');
    return v.record(v.string(), nodeSchema(any));
  }
  const entries: Record<string, v.GenericSchema> = {};
  for (const [key, child] of node.children) entries[key] = v.optional(nodeSchema(child));
  return v.strictObject(entries);
}

const SHAPE = buildShape();
const FILE_SCHEMA = nodeSchema(SHAPE);

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

/** Checks a parsed config file against the settings; the error names the offending key. */
export function validateConfig(value: unknown, path: string): ConfigFile {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new UsageError(`config file ${path}: must be a JSON object`);
  }
  const result = v.safeParse(FILE_SCHEMA, value);
  if (result.success) return result.output as ConfigFile;
  throw new UsageError(`config file ${path}: ${describeIssue(result.issues[0])}`);
}

/** One issue as a sentence naming the key as the user wrote it: `"daemon.maxRetries" must be …`. */
function describeIssue(issue: v.BaseIssue<unknown>): string {
  const keys = (issue.path ?? []).map((p) => String(p.key));
  let node: ShapeNode = SHAPE;
  let shown = '';
  for (const [i, key] of keys.entries()) {
    const named = node.children.get(key);
    const next = named ?? node.children.get('*');
    shown += named ? (shown ? `.${key}` : key) : `[${JSON.stringify(key)}]`;
    if (!next) {
      const parent = i > 0 ? ` in ${quoteKey(displayPath(keys.slice(0, i)))}` : '';
      return `unknown key "${key}"${parent} (known: ${[...node.children.keys()].join(', ')})`;
    }
    node = next;
  }
  if (node.leaf) {
    const spec = node.leaf.spec;
    const kind = spec.secret ? envName() : spec.kind;
    const what = kind.problem?.(issue.input) ?? `must be ${kind.expected}`;
    return `${quoteKey(shown)} ${what}, got ${JSON.stringify(issue.input)}`;
  }
  if (node.children.has('*')) return `${quoteKey(shown)} must be an object of model name → settings`;
  return `${quoteKey(shown)} must be an object`;
}

function displayPath(keys: string[]): string {
  let node: ShapeNode | undefined = SHAPE;
  let shown = '';
  for (const key of keys) {
    const named: ShapeNode | undefined = node?.children.get(key);
    shown += named ? (shown ? `.${key}` : key) : `[${JSON.stringify(key)}]`;
    node = named ?? node?.children.get('*');
  }
  return shown;
}

/**
 * The value of a file path in a validated config file. A path with '*' yields a map of model name →
 * value (models without the key are left out).
 */
export function readFilePath(file: ConfigFile, path: string): unknown {
  const walk = (value: unknown, segments: string[]): unknown => {
    if (segments.length === 0) return value;
    if (value === null || typeof value !== 'object') return undefined;
    const [head, ...rest] = segments as [string, ...string[]];
    const obj = value as Record<string, unknown>;
    if (head !== '*') return walk(obj[head], rest);
    const map: Record<string, unknown> = {};
    for (const [model, entry] of Object.entries(obj)) {
      const found = walk(entry, rest);
      if (found !== undefined) map[model] = found;
    }
    return map;
  };
  return walk(file, path.split('.'));
}

/** `models.*.limit` with the model's name filled in, for messages: models["gpt-4o"].limit. */
export function fileKeyOf(path: string, model?: string): string {
  return path
    .split('.')
    .map((s, i) => (s === '*' ? `[${JSON.stringify(model ?? '*')}]` : i === 0 ? s : `.${s}`))
    .join('');
}

/** A config-file key for messages: "daemon.maxRetries" quoted, models["gpt-4o"].limit as is. */
export function quoteKey(key: string): string {
  return key.includes('[') ? key : `"${key}"`;
}
