/**
 * Longer than ~400 lines by design: it is the one table of every setting, kept whole so that a
 * setting's definition never spreads over several files.
 *
 * Every setting of fusillade, defined once: its type and range, default, flag, environment variable,
 * config-file path, meaning, and the commands that take it. From this table come the TypeScript types
 * (SettingValues, DaemonSettings), validation with messages naming the setting as the user wrote it,
 * the commander flags (src/cli/options.ts), environment and config-file parsing (resolve.ts,
 * config-file.ts), the daemon's defaults (src/dispatch/config.ts) and the README's settings tables
 * (`npm run docs:settings`; test/config/settings-table.test.ts fails when the README is stale).
 *
 * How to add a setting (one place, then regenerate the README):
 *   1. Add an entry below. `kind` is its type and range (kinds.ts: integer({ min }), boolean(),
 *      text(), httpUrl(), …); `description` is one line, present tense. Give only the sources it has:
 *      `flag` ('--pool-size <n>'), `env` ('FUSILLADE_POOL_SIZE'), `file` (dotted config-file path,
 *      'daemon.maxResponseBytes'; '*' stands for a model name: 'models.*.rpm'). `commands` says which
 *      commands show the flag and read it. `default` is its value when no source gives one.
 *   2. A per-model setting (`--model-rpm MODEL=N`, `models.*.rpm`): `perModel: true`; its value is a
 *      Record<model, value>, flag entries override the file's model by model.
 *   3. A secret (keys, tokens, signing secrets): `secret: true`. It is read from its flag and
 *      environment variable only; its `file` path, if any, holds the *name* of an environment
 *      variable that holds it (as `upstreamApiKeyEnv`), never the secret itself.
 *   4. A daemon setting: name it as the DaemonConfig field and set `daemon: true`; it becomes part
 *      of DaemonSettings (so of DaemonConfig), its default becomes DEFAULT_DAEMON_CONFIG's, the
 *      library checks it in `new PostgresRequestManager(pool, config)`, and serve/run/daemon pass it
 *      to their daemon (src/cli/manager-config.ts). Its file path is usually 'daemon.<name>'.
 *   5. Anything else: read it in the command from `ctx.settings.<name>` (typed already).
 *   6. Run `npm run docs:settings` to regenerate the README's tables, and test the new setting.
 * Precedence is the same for every setting and every command: flag > environment > config file >
 * default. Names are public interface: never rename a flag, variable or file key users may have.
 */
import { DURATION_PATTERN } from '../domain/duration.js';
import type { ModelRateLimit } from '../domain/rate-wallet.js';
import { type RetryableStatuses, retryableStatusesProblem } from '../domain/retry.js';
import { type ModelPrice, modelPriceProblem } from '../domain/usage.js';
import { boolean, checked, decimal, httpUrl, integer, type Kind, oneOf, postgresUrl, text } from './kinds.js';

/** Why a library config's per-model rate limits are not valid (null when they are). */
function modelRateLimitProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'must be an object { rpm?, tpm?, adaptiveConcurrency? }';
  }
  for (const [k, x] of Object.entries(value)) {
    if (k === 'rpm' || k === 'tpm') {
      if (x !== undefined && x !== null && !(typeof x === 'number' && Number.isInteger(x) && x >= 1)) {
        return `${k} must be an integer >= 1`;
      }
    } else if (k === 'adaptiveConcurrency') {
      if (x !== undefined && typeof x !== 'boolean') return 'adaptiveConcurrency must be true or false';
    } else return `has an unknown field "${k}" (known: rpm, tpm, adaptiveConcurrency)`;
  }
  return null;
}

/** The CLI's commands that take settings (`keys` covers keys create/list/revoke; `webhooks` its add/list/remove/enable). */
export type CommandName =
  | 'serve'
  | 'daemon'
  | 'run'
  | 'migrate'
  | 'keys'
  | 'submit'
  | 'status'
  | 'results'
  | 'cancel'
  | 'mock-upstream'
  | 'webhooks'
  | 'purge'
  | 'reroute';

export interface SettingSpec<T = unknown> {
  kind: Kind<T>;
  /** One line for --help and the README. */
  description: string;
  /** The commands that take it: they show its flag and read it. */
  commands: readonly CommandName[];
  /** commander's flag: '--default-limit <n>'; '--no-daemon' for a boolean that defaults to true. */
  flag?: string;
  env?: string;
  /** Config-file path (dotted; '*' = a model name). More than one: the first is documented, the others are accepted aliases. */
  file?: string | readonly string[];
  /** Never read from the config file; `file` (if any) names an environment variable holding it. */
  secret?: boolean;
  /** A map from model name to value: `--flag MODEL=VALUE` (repeatable) and a '*' file path. */
  perModel?: boolean;
  /** A DaemonConfig field (see "How to add a setting", step 4). */
  daemon?: boolean;
  /** A flag of the program rather than of its commands (`fusillade --config FILE serve`). */
  global?: boolean;
  /** The value when no source gives one (per-model settings: a map). */
  default?: unknown;
  /** README text for a default that is not a plain value. */
  defaultText?: string;
}

const DATABASE: readonly CommandName[] = [
  'serve',
  'daemon',
  'run',
  'migrate',
  'keys',
  'webhooks',
  'purge',
  'reroute',
];
const DISPATCH: readonly CommandName[] = ['serve', 'daemon', 'run'];
/** The routing settings: the dispatching commands, and `reroute`, which moves a batch to them. */
const ROUTING: readonly CommandName[] = [...DISPATCH, 'reroute'];
const CLIENT: readonly CommandName[] = ['submit', 'status', 'results', 'cancel'];
const ALL: readonly CommandName[] = [...DATABASE, ...CLIENT, 'mock-upstream'];

/** A daemon tuning setting: a daemon.<name> config-file key, taken by serve, daemon and run. */
function tuning<T>(
  name: string,
  kind: Kind<T>,
  defaultValue: T,
  description: string,
): SettingSpec<T> & { daemon: true; default: T } {
  return {
    kind,
    description,
    commands: DISPATCH,
    file: `daemon.${name}`,
    daemon: true,
    default: defaultValue,
  };
}

export const SETTINGS = {
  config: {
    kind: text({ nonBlank: true, expected: 'a file name', label: 'file' }),
    description: 'JSON config file; flags and environment variables override it',
    commands: ALL,
    flag: '--config <file>',
    env: 'FUSILLADE_CONFIG',
    global: true,
    defaultText: 'none',
  },
  databaseUrl: {
    kind: postgresUrl(),
    description: 'PostgreSQL URL; none = the embedded PostgreSQL in the data directory',
    commands: DATABASE,
    flag: '--database-url <url>',
    env: 'DATABASE_URL',
    file: 'databaseUrl',
    defaultText: 'none: the embedded PostgreSQL',
  },
  directDatabaseUrl: {
    kind: postgresUrl(),
    description:
      'direct PostgreSQL URL for what needs a session (LISTEN, the liveness lock, migrations); --database-url is then used as a transaction pooler such as PgBouncer',
    commands: DATABASE,
    flag: '--direct-database-url <url>',
    env: 'FUSILLADE_DIRECT_DATABASE_URL',
    file: 'directDatabaseUrl',
    defaultText: 'none: --database-url is a direct connection',
  },
  poolSize: {
    kind: integer({ min: 1 }),
    description:
      "most connections of the process's pool (the daemon adds one session connection; README: connection budget)",
    commands: DATABASE,
    flag: '--pool-size <n>',
    env: 'FUSILLADE_POOL_SIZE',
    file: 'poolSize',
    defaultText: '20 for serve, daemon and run; 2 for the others',
  },
  dataDir: {
    kind: text({ nonBlank: true, expected: 'a directory', label: 'directory' }),
    description: 'directory of the embedded PostgreSQL',
    commands: DATABASE,
    flag: '--data-dir <dir>',
    env: 'FUSILLADE_DATA_DIR',
    file: 'dataDir',
    default: '.fusillade',
  },
  embeddedUser: {
    kind: text({ nonBlank: true, expected: 'an account name', label: 'account' }),
    description: 'as root: the account the embedded PostgreSQL runs as (else postgres, else nobody)',
    commands: DATABASE,
    env: 'FUSILLADE_EMBEDDED_USER',
    defaultText: 'postgres, else nobody',
  },
  schema: {
    kind: text({
      pattern: /^[a-z_][a-z0-9_]{0,62}$/,
      expected: 'lowercase letters, digits and _',
      label: 'name',
    }),
    description: 'PostgreSQL schema of the tables',
    commands: DATABASE,
    flag: '--schema <name>',
    env: 'FUSILLADE_SCHEMA',
    file: 'schema',
    default: 'fusillade',
  },
  upstream: {
    kind: httpUrl({ orMock: true }),
    description: 'upstream base URL for every model, or "mock" for the built-in mock',
    commands: ROUTING,
    flag: '--upstream <url>',
    env: 'FUSILLADE_UPSTREAM',
    file: 'upstream',
    defaultText: 'none (`run` and `daemon` require one)',
  },
  upstreamApiKey: {
    kind: text(),
    description: 'API key sent upstream',
    commands: ROUTING,
    flag: '--upstream-api-key <key>',
    env: 'FUSILLADE_UPSTREAM_API_KEY',
    file: 'upstreamApiKeyEnv',
    secret: true,
    defaultText: 'none',
  },
  modelUpstreams: {
    kind: httpUrl(),
    description: "a model's own upstream base URL",
    commands: ROUTING,
    file: 'models.*.upstream',
    perModel: true,
    default: {},
  },
  modelApiKeys: {
    kind: text(),
    description: "a model's own upstream API key",
    commands: ROUTING,
    file: 'models.*.apiKeyEnv',
    perModel: true,
    secret: true,
    default: {},
  },
  modelConcurrencyLimits: {
    kind: integer({ min: 0 }),
    description: 'in-flight limit of one model, held across all daemons on the database',
    commands: DISPATCH,
    flag: '--model-limit <model=n>',
    file: 'models.*.limit',
    perModel: true,
    daemon: true,
    default: {},
  },
  modelRpm: {
    kind: integer({ min: 1 }),
    description:
      "requests per minute of one model, held across all daemons on the database (none: as the upstream's headers say)",
    commands: DISPATCH,
    flag: '--model-rpm <model=n>',
    file: 'models.*.rpm',
    perModel: true,
    default: {},
  },
  modelTpm: {
    kind: integer({ min: 1 }),
    description:
      'tokens per minute of one model (prompt + requested maximum output, as providers count), held across all daemons',
    commands: DISPATCH,
    flag: '--model-tpm <model=n>',
    file: 'models.*.tpm',
    perModel: true,
    default: {},
  },
  modelAdaptiveConcurrency: {
    kind: boolean(),
    description:
      "adapt each daemon's concurrency of one model to the upstream (down ×0.9 on 429/503/529/timeouts, up while healthy, never above its limit)",
    commands: DISPATCH,
    file: 'models.*.adaptiveConcurrency',
    perModel: true,
    default: {},
  },
  modelPrices: {
    kind: checked<ModelPrice>(modelPriceProblem, '{ input: n, cachedInput?: n, output: n }', 'price'),
    description: "a model's prices per million tokens (input, cached input, output): batches show their cost",
    commands: ['serve', 'run'],
    file: 'models.*.price',
    perModel: true,
    default: {},
  },
  modelRateLimits: {
    kind: checked<ModelRateLimit>(
      modelRateLimitProblem,
      '{ rpm?: n, tpm?: n, adaptiveConcurrency?: boolean }',
      'limits',
    ),
    description:
      'library: { [model]: { rpm?, tpm?, adaptiveConcurrency? } }, held across all daemons (the CLI builds it from the three settings above)',
    commands: DISPATCH,
    perModel: true,
    daemon: true,
    default: {},
  },
  defaultModelConcurrency: {
    kind: integer({ min: 0 }),
    description:
      'in-flight limit of models without one of their own; a daemon sets it at start for every such model on the database, replacing an earlier default',
    commands: DISPATCH,
    flag: '--default-limit <n>',
    env: 'FUSILLADE_DEFAULT_LIMIT',
    file: ['defaultLimit', 'daemon.defaultModelConcurrency'],
    daemon: true,
    default: 16,
  },
  port: {
    kind: integer({ min: 0, max: 65535, expected: 'a port number (0-65535)' }),
    description: 'port of the API server (0: any free port)',
    commands: ['serve'],
    flag: '--port <n>',
    env: 'FUSILLADE_PORT',
    file: 'port',
    default: 8080,
  },
  host: {
    kind: text({ nonBlank: true, expected: 'a host name or address', label: 'host' }),
    description: 'interface the server listens on',
    commands: ['serve', 'mock-upstream'],
    flag: '--host <host>',
    env: 'FUSILLADE_HOST',
    file: 'host',
    default: '127.0.0.1',
  },
  completionWindows: {
    kind: text({
      pattern: /^\s*\d+[smhd](\s*,\s*\d+[smhd])*\s*$/,
      expected: 'completion windows separated by commas, e.g. 24h,1h',
      label: 'windows',
    }),
    description:
      "the completion_window values the Batch API accepts; within an owner's share, nearer deadlines go first",
    commands: ['serve'],
    flag: '--completion-windows <list>',
    env: 'FUSILLADE_COMPLETION_WINDOWS',
    file: 'completionWindows',
    default: '24h,1h',
  },
  daemon: {
    kind: boolean(),
    description:
      'the daemon runs in the server process; --no-daemon serves the API only (run `fusillade daemon` elsewhere)',
    commands: ['serve'],
    flag: '--no-daemon',
    default: true,
  },
  allowPrivateWebhooks: {
    kind: boolean(),
    description:
      'deliver webhooks to (and accept receivers on) private and loopback addresses; refused by default',
    commands: ['serve', 'daemon', 'webhooks'],
    flag: '--allow-private-webhooks',
    env: 'FUSILLADE_ALLOW_PRIVATE_WEBHOOKS',
    file: 'allowPrivateWebhooks',
    default: false,
  },
  metricsToken: {
    kind: text({ nonBlank: true, expected: 'non-empty (leave it out to keep /metrics open)' }),
    description: 'require "Authorization: Bearer <token>" on /metrics',
    commands: ['serve'],
    flag: '--metrics-token <token>',
    env: 'FUSILLADE_METRICS_TOKEN',
    secret: true,
    defaultText: 'none: /metrics is open',
  },
  headersTimeoutMs: {
    kind: integer({ min: 1000 }),
    description: 'a request whose headers take longer is answered 408 (ms)',
    commands: ['serve'],
    env: 'FUSILLADE_HEADERS_TIMEOUT_MS',
    file: 'headersTimeoutMs',
    default: 30_000,
  },
  idleTimeoutMs: {
    kind: integer({ min: 1000 }),
    description:
      'a request body (or an answer being read) that stalls this long is answered 408 / closed (ms)',
    commands: ['serve'],
    env: 'FUSILLADE_IDLE_TIMEOUT_MS',
    file: 'idleTimeoutMs',
    default: 30_000,
  },
  server: {
    kind: httpUrl(),
    description: 'URL of a running `fusillade serve`',
    commands: CLIENT,
    flag: '--server <url>',
    env: 'FUSILLADE_SERVER',
    file: 'server',
    default: 'http://127.0.0.1:8080',
  },
  apiKey: {
    kind: text(),
    description: 'API key from `fusillade keys create`',
    commands: CLIENT,
    flag: '--api-key <key>',
    env: 'FUSILLADE_API_KEY',
    file: 'apiKeyEnv',
    secret: true,
    defaultText: 'none',
  },
  mockPort: {
    kind: integer({ min: 0, max: 65535, expected: 'a port number (0-65535)' }),
    description: 'port of the mock upstream (not 8080: it usually runs beside `fusillade serve`)',
    commands: ['mock-upstream'],
    flag: '--port <n>',
    default: 9000,
  },
  mockLatencyMs: {
    kind: integer({ min: 0 }),
    description: "delay of each of the mock upstream's answers, in milliseconds",
    commands: ['mock-upstream'],
    flag: '--latency-ms <n>',
    default: 0,
  },
  mockRpm: {
    kind: integer({ min: 0 }),
    description: 'requests per minute per model the mock admits (429 with retry-after-ms when over)',
    commands: ['mock-upstream'],
    flag: '--rpm <n>',
    defaultText: 'unlimited',
  },
  mockTpm: {
    kind: integer({ min: 0 }),
    description: 'tokens per minute per model the mock admits, counted as prompt characters / 4 + max output',
    commands: ['mock-upstream'],
    flag: '--tpm <n>',
    defaultText: 'unlimited',
  },
  mockBurstSeconds: {
    kind: integer({ min: 1 }),
    description: "capacity of the mock's rate buckets, in seconds of refill",
    commands: ['mock-upstream'],
    flag: '--burst-seconds <n>',
    default: 60,
  },
  mockDefaultMaxTokens: {
    kind: integer({ min: 0 }),
    description: 'output tokens the mock counts for a request naming no maximum',
    commands: ['mock-upstream'],
    flag: '--default-max-tokens <n>',
    default: 256,
  },
  mockRateLimitHeaders: {
    kind: oneOf(['openai', 'anthropic', 'none'] as const),
    description: 'rate-limit headers the mock sends: x-ratelimit-* (openai), anthropic-ratelimit-*, or none',
    commands: ['mock-upstream'],
    flag: '--rate-limit-headers <style>',
    default: 'openai',
  },
  maxRetries: tuning(
    'maxRetries',
    integer({ min: 0 }),
    5,
    'retries after the first attempt for retriable errors',
  ),
  backoffMs: tuning(
    'backoffMs',
    integer({ min: 0 }),
    1000,
    'full-jitter backoff: random(0, min(maxBackoffMs, backoffMs * backoffFactor^attempt))',
  ),
  backoffFactor: tuning('backoffFactor', decimal({ min: 1 }), 2, 'growth of the backoff per attempt'),
  maxBackoffMs: tuning(
    'maxBackoffMs',
    integer({ min: 0 }),
    60_000,
    "cap of one backoff; never shorter than the upstream's retry-after",
  ),
  requestTimeoutMs: tuning(
    'requestTimeoutMs',
    integer({ min: 1 }),
    600_000,
    'one HTTP attempt, headers and body (long generations take minutes)',
  ),
  maxResponseBytes: tuning(
    'maxResponseBytes',
    integer({ min: 0 }),
    64 * 1024 * 1024,
    'largest upstream answer body (0: no cap); past it the attempt fails with response_too_large (final) and the connection is cut. 64 MiB holds 2,048 embeddings of 1,536 dimensions as JSON floats (~60 MB)',
  ),
  claimBatchSize: tuning(
    'claimBatchSize',
    integer({ min: 1 }),
    100,
    'most rows one claim takes for one model',
  ),
  pollIntervalMs: tuning(
    'pollIntervalMs',
    integer({ min: 10 }),
    1000,
    'fallback poll when no notification arrives',
  ),
  heartbeatIntervalMs: tuning(
    'heartbeatIntervalMs',
    integer({ min: 10 }),
    5000,
    'how often a daemon proves it is alive',
  ),
  deadDaemonAfterMs: tuning(
    'deadDaemonAfterMs',
    integer({ min: 1 }),
    30_000,
    'a daemon silent this long is dead: its requests are reclaimed',
  ),
  leaseMs: {
    kind: integer({ min: 1 }),
    description: 'a claimed/processing row whose lease ran out is reclaimed',
    commands: DISPATCH,
    file: 'daemon.leaseMs',
    daemon: true,
    defaultText: 'requestTimeoutMs + 60000',
  },
  shutdownGraceMs: tuning(
    'shutdownGraceMs',
    integer({ min: 0 }),
    30_000,
    'stop(): how long in-flight requests may finish before being handed back',
  ),
  budgetIntervalMs: tuning(
    'budgetIntervalMs',
    integer({ min: 10 }),
    250,
    "how often a daemon holding or wanting slots rebalances its share of the models' limits",
  ),
  maxDbWriters: tuning(
    'maxDbWriters',
    integer({ min: 1 }),
    4,
    'concurrent database writes, apart from HTTP concurrency',
  ),
  dbTimeoutMs: tuning(
    'dbTimeoutMs',
    integer({ min: 100 }),
    15_000,
    'deadline of every daemon query and transaction (a dropped connection must not hang it)',
  ),
  synchronousCommit: tuning(
    'synchronousCommit',
    boolean(),
    true,
    'false: claims and results commit without waiting for the WAL flush (a PostgreSQL crash may then resend the last ~0.6 s of requests)',
  ),
  retryableStatuses: {
    kind: checked<RetryableStatuses>(
      retryableStatusesProblem,
      'a list of HTTP statuses, or { "add": [...], "remove": [...] }',
      'statuses',
    ),
    description: 'HTTP statuses retried: a list replaces the defaults, { add, remove } edits them',
    commands: DISPATCH,
    file: 'daemon.retryableStatuses',
    daemon: true,
    defaultText: '408, 429, 500, 502, 503, 504, 529',
  },
  defaultMaxOutputTokens: tuning(
    'defaultMaxOutputTokens',
    integer({ min: 0 }),
    1024,
    'output tokens a request naming no max_tokens is counted for against a tokens-per-minute limit',
  ),
  rateBurstSeconds: tuning(
    'rateBurstSeconds',
    decimal({ min: 0.1 }),
    10,
    "largest burst of a per-minute limit, in seconds of its rate (the model's bucket capacity)",
  ),
  learnRateLimits: tuning(
    'learnRateLimits',
    boolean(),
    true,
    "pace models without configured limits by the upstream's x-ratelimit-* / anthropic-ratelimit-* headers",
  ),
  keyEncryptionKey: {
    kind: text({
      pattern: /^\s*(?:[0-9a-fA-F]{64}|[A-Za-z0-9+/_-]{43}=?)\s*$/,
      expected: '32 random bytes as 64 hex digits or base64 (openssl rand -base64 32)',
      label: 'secret',
    }),
    description:
      'seals upstream keys the library stores in templates (AES-256-GCM); a daemon sends such templates only with it',
    commands: DISPATCH,
    env: 'FUSILLADE_KEY_ENCRYPTION_KEY',
    file: 'keyEncryptionKeyEnv',
    secret: true,
    daemon: true,
    defaultText: 'none: template keys are stored as given',
  },
  finishedBatchRetention: {
    kind: text({
      pattern: DURATION_PATTERN,
      expected: 'a duration such as "30d", "12h" or "90m"',
      label: 'duration',
    }),
    description:
      'batches finished longer ago are purged in the background with their requests and files, and uploaded files as old that no batch uses',
    commands: [...DISPATCH, 'purge'],
    env: 'FUSILLADE_RETENTION_FINISHED_BATCHES',
    file: 'retention.finishedBatches',
    daemon: true,
    defaultText: 'none: kept until deleted or expired',
  },
  purgeIntervalMs: tuning(
    'purgeIntervalMs',
    integer({ min: 1000 }),
    60_000,
    'how often daemons purge expired and deleted data (one daemon at a time, ~10k rows per transaction, paced to at most a tenth of the time)',
  ),
  compressFinishedBodies: tuning(
    'compressFinishedBodies',
    boolean(),
    true,
    'daemons compress the answers of ended batches in the background (one daemon at a time, ~2,000 rows per transaction, every purgeIntervalMs); every read takes either form. Off: answers stay text, those already compressed stay readable',
  ),
  compressAfterMs: tuning(
    'compressAfterMs',
    integer({ min: 0 }),
    600_000,
    'how long after a batch ends its answers are compressed: a download right after the end reads them as stored text (no inflating), and a batch purged sooner is never rewritten',
  ),
  handleSignals: tuning(
    'handleSignals',
    boolean(),
    false,
    'stop() on SIGTERM/SIGINT (the CLI handles signals itself; a library should not take them over)',
  ),
} as const satisfies Record<string, SettingSpec>;

export type SettingName = keyof typeof SETTINGS;

type KindValue<S> = S extends { kind: Kind<infer T> } ? T : never;
/** A setting's resolved type: per-model settings are maps; settings without a default may be absent. */
export type ValueOf<S> = S extends { perModel: true }
  ? Record<string, KindValue<S>>
  : S extends { default: unknown }
    ? KindValue<S>
    : KindValue<S> | undefined;

type Defaulted = {
  [K in SettingName]: (typeof SETTINGS)[K] extends { default: unknown } ? K : never;
}[SettingName];

/** Every setting's value, as the CLI resolves them for a command; those without a default may be absent. */
export type SettingValues = { -readonly [K in Defaulted]: ValueOf<(typeof SETTINGS)[K]> } & {
  -readonly [K in Exclude<SettingName, Defaulted>]?: Exclude<ValueOf<(typeof SETTINGS)[K]>, undefined>;
};

type DaemonName = {
  [K in SettingName]: (typeof SETTINGS)[K] extends { daemon: true } ? K : never;
}[SettingName];
/** The daemon's settings (DaemonConfig without its hooks); those without a default are optional. */
export type DaemonSettings = { -readonly [K in DaemonName & Defaulted]: ValueOf<(typeof SETTINGS)[K]> } & {
  -readonly [K in Exclude<DaemonName, Defaulted>]?: Exclude<ValueOf<(typeof SETTINGS)[K]>, undefined>;
};

/** The spec of each setting, by name (a wider type for code that walks them all). */
export function settingSpecs(): [SettingName, SettingSpec][] {
  return Object.entries(SETTINGS) as [SettingName, SettingSpec][];
}

/** The config-file paths of a setting, documented one first. */
export function filePaths(spec: SettingSpec): readonly string[] {
  return spec.file === undefined ? [] : typeof spec.file === 'string' ? [spec.file] : spec.file;
}

/** commander's attribute name of a flag: '--default-limit <n>' → defaultLimit, '--no-daemon' → daemon. */
export function flagAttribute(flag: string): string {
  const long = flag.split(/[ ,]/).find((p) => p.startsWith('--'))!;
  return long.replace(/^--(no-)?/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The flag's long name alone, for messages: '--default-limit <n>' → '--default-limit'. */
export function flagName(flag: string): string {
  return flag.split(/[ ,]/).find((p) => p.startsWith('--'))!;
}
