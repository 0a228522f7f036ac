import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonConfigFor } from '../../src/cli/daemon-config.js';
import { validateConfig } from '../../src/config/config-file.js';
import { checkDaemonSettings, DAEMON_DEFAULTS } from '../../src/config/daemon-settings.js';
import { checkValue } from '../../src/config/resolve.js';
import {
  type CommandName,
  filePaths,
  flagAttribute,
  flagName,
  SETTINGS,
  type SettingName,
  type SettingSpec,
  settingSpecs,
} from '../../src/config/schema.js';
import { resolveSettings } from '../../src/config/settings.js';
import { updateReadme } from '../../src/config/settings-table.js';
import { UsageError } from '../../src/config/usage-error.js';
import { DEFAULT_DAEMON_CONFIG, sendWindowMs } from '../../src/dispatch/config.js';
import { ValidationError } from '../../src/domain/errors.js';
import { createServer } from '../../src/server/server.js';
import { createTestDb } from '../support/db.js';

const COMMANDS: CommandName[] = [
  'serve',
  'daemon',
  'run',
  'migrate',
  'keys',
  'submit',
  'status',
  'results',
  'cancel',
  'mock-upstream',
  'purge',
];

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-settings-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function configFile(content: unknown): Promise<string> {
  const path = join(dir, `config-${n++}.json`);
  await writeFile(path, JSON.stringify(content));
  return path;
}

/** Sets a dotted file path ('*' = model `m`) in a config object. */
function setPath(target: Record<string, unknown>, path: string, value: unknown, model = 'm'): void {
  const keys = path.split('.').map((k) => (k === '*' ? model : k));
  let node = target;
  for (const key of keys.slice(0, -1)) {
    node[key] ??= {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
}

/** Two valid values of a setting, distinct from each other (as typed values and as text). */
function samples(spec: SettingSpec): [unknown, unknown] {
  const e = spec.kind.expected;
  if (spec.kind.label === 'boolean') return [false, true];
  if (spec.kind.label === 'word') {
    const words = e.replace('one of ', '').split(', ');
    const others = words.filter((w) => w !== spec.default);
    return [others[0], others[1] ?? spec.default];
  }
  if (spec.kind.label === 'statuses') return [[503], { add: [404] }];
  if (spec.kind.label === 'price')
    return [
      { input: 1, output: 2 },
      { input: 3, cachedInput: 1, output: 4 },
    ];
  // 32 bytes as hex (keyEncryptionKey).
  if (spec.kind.label === 'secret') return ['a'.repeat(64), 'b'.repeat(64)];
  if (spec.kind.label === 'integer') {
    const min = Number(/-?\d+/.exec(e)?.[0] ?? 0);
    return [min + 1, min + 2];
  }
  if (spec.kind.label === 'number') return [1.5, 2.5];
  if (spec.kind.label === 'duration') return ['30d', '12h'];
  if (spec.kind.label === 'windows') return ['1h', '24h,2h'];
  if (e.includes('postgres://')) return ['postgres://a.example/x', 'postgres://b.example/x'];
  if (e.includes('http(s) URL')) return ['http://a.example', 'http://b.example'];
  if (e.includes('lowercase')) return ['from_a', 'from_b'];
  return ['value-a', 'value-b'];
}

type Source = 'flag' | 'env' | 'file';

/** Puts `value` for `name` into one source. */
function put(
  name: SettingName,
  spec: SettingSpec,
  source: Source,
  value: unknown,
  into: { flags: Record<string, unknown>; env: Record<string, string>; file: Record<string, unknown> },
): void {
  if (source === 'flag') {
    into.flags[flagAttribute(spec.flag!)] = spec.perModel ? { m: value } : value;
  } else if (source === 'env') {
    into.env[spec.env!] = String(value);
  } else if (spec.secret) {
    const variable = `HOUSE_SECRET_${name.toUpperCase()}`;
    into.env[variable] = String(value);
    setPath(into.file, filePaths(spec)[0]!, variable);
  } else {
    setPath(into.file, filePaths(spec)[0]!, value);
  }
}

function sourcesOf(spec: SettingSpec): Source[] {
  const out: Source[] = [];
  if (spec.flag && !spec.flag.startsWith('--no-')) out.push('flag');
  if (spec.env) out.push('env');
  if (spec.file) out.push('file');
  return out;
}

describe('the settings schema', () => {
  it('every default is a valid value of its setting; names are unique', () => {
    const envs = new Set<string>();
    for (const [name, spec] of settingSpecs()) {
      if (spec.default !== undefined && !spec.perModel)
        expect(() => checkValue(spec, spec.default, name)).not.toThrow();
      if (spec.env) {
        expect(envs.has(spec.env), spec.env).toBe(false);
        envs.add(spec.env);
      }
      expect(spec.description.length).toBeGreaterThan(0);
    }
    for (const command of COMMANDS) {
      const flags = settingSpecs()
        .filter(([, s]) => s.flag && s.commands.includes(command))
        .map(([, s]) => flagName(s.flag!));
      expect(new Set(flags).size, command).toBe(flags.length);
    }
  });

  it('the README tables are generated from the schema (run `npm run docs:settings` when this fails)', async () => {
    const readme = await readFile(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    expect(updateReadme(readme) === readme).toBe(true);
  });

  it('DEFAULT_DAEMON_CONFIG comes from the schema', () => {
    expect(DEFAULT_DAEMON_CONFIG).toEqual(DAEMON_DEFAULTS);
    expect(DEFAULT_DAEMON_CONFIG.heartbeatIntervalMs).toBe(SETTINGS.heartbeatIntervalMs.default);
    expect(DEFAULT_DAEMON_CONFIG.leaseMs).toBeUndefined();
  });

  it("a claimed row's send window leaves its lease room for the attempt and its write", () => {
    const c = (leaseMs: number | undefined, requestTimeoutMs: number) =>
      sendWindowMs({ ...DEFAULT_DAEMON_CONFIG, leaseMs, requestTimeoutMs });
    expect(c(undefined, 600_000)).toBe(30_000); // lease = timeout + 60 s: 30 s for the attempt's write
    expect(c(20_000, 10_000)).toBe(5_000); // a short spare: half of it for the write
    expect(c(10_000, 10_000)).toBeNull(); // a lease no longer than an attempt: nothing to protect
  });
});

describe('one precedence for every setting and every command: flag > environment > config file > default', () => {
  for (const command of COMMANDS) {
    it(command, async () => {
      let checked = 0;
      for (const [name, spec] of settingSpecs()) {
        if (!spec.global && !spec.commands.includes(command)) continue;
        if (name === 'config') continue;
        const sources = sourcesOf(spec);
        for (const [i, higher] of sources.entries()) {
          for (const lower of [...sources.slice(i + 1), 'default' as const]) {
            const [a, b] = samples(spec);
            const into = { flags: {}, env: {}, file: {} };
            put(name, spec, higher, a, into);
            if (lower !== 'default') put(name, spec, lower, b, into);
            const config = await configFile(into.file);
            const settings = await resolveSettings({ ...into.flags, config }, into.env, command);
            const got = (settings as unknown as Record<string, unknown>)[name];
            expect(
              spec.perModel ? (got as Record<string, unknown>).m : got,
              `${name}: ${higher} over ${lower}`,
            ).toEqual(a);
            expect(settings.origins[name], `${name}: ${higher} over ${lower}`).toBe(higher);
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  }

  it('a setting the command does not take is not read from any source', async () => {
    const settings = await resolveSettings(
      {},
      { FUSILLADE_PORT: 'not a port', FUSILLADE_SERVER: 'x' },
      'run',
    );
    expect(settings.port).toBe(8080);
    await expect(resolveSettings({}, { FUSILLADE_PORT: 'x' }, 'serve')).rejects.toThrow(
      /FUSILLADE_PORT must be a port number \(0-65535\), got "x"/,
    );
  });

  it('serve, run and daemon give their daemon the same configuration (serve: --default-limit beats the file)', async () => {
    const config = await configFile({
      daemon: { defaultModelConcurrency: 7, maxRetries: 2, synchronousCommit: false },
      models: { 'gpt-a': { limit: 3 } },
    });
    const env = { FUSILLADE_DEFAULT_LIMIT: '5' };
    for (const command of ['serve', 'run', 'daemon'] as const) {
      const viaFlag = await resolveSettings(
        { config, defaultLimit: 4, modelLimit: { 'gpt-a': 9 } },
        env,
        command,
      );
      const daemon = daemonConfigFor(viaFlag, viaFlag.routing);
      expect(daemon).toMatchObject({
        defaultModelConcurrency: 4,
        maxRetries: 2,
        synchronousCommit: false,
        modelConcurrencyLimits: { 'gpt-a': 9 },
      });
      const viaEnv = await resolveSettings({ config }, env, command);
      expect(daemonConfigFor(viaEnv, viaEnv.routing).defaultModelConcurrency).toBe(5);
      const viaFile = await resolveSettings({ config }, {}, command);
      expect(daemonConfigFor(viaFile, viaFile.routing)).toMatchObject({
        defaultModelConcurrency: 7,
        modelConcurrencyLimits: { 'gpt-a': 3 },
      });
      const none = await resolveSettings({}, {}, command);
      expect(daemonConfigFor(none, none.routing).defaultModelConcurrency).toBeUndefined();
    }
  });

  it("createServer with serve's configuration runs its daemon at the flag's limit, not the file's", async () => {
    const db = await createTestDb({ max: 4 });
    try {
      const config = await configFile({ daemon: { defaultModelConcurrency: 7 }, defaultLimit: 7 });
      const settings = await resolveSettings({ config, defaultLimit: 3 }, {}, 'serve');
      const server = await createServer({
        pool: db.pool,
        schema: db.schema,
        port: 0,
        daemon: false,
        routing: settings.routing,
        daemonConfig: daemonConfigFor(settings, settings.routing),
      });
      try {
        expect(server.manager.config.defaultModelConcurrency).toBe(3);
      } finally {
        await server.close();
      }
    } finally {
      await db.close();
    }
  });
});

describe('values', () => {
  it('booleans are true/false (and 0/1 in the file, as before); text accepts true/false/yes/no/on/off/1/0', async () => {
    for (const [value, expected] of [
      [false, false],
      [true, true],
      [0, false],
      [1, true],
    ] as const) {
      const config = await configFile({ daemon: { synchronousCommit: value } });
      expect((await resolveSettings({ config }, {}, 'serve')).daemonConfig.synchronousCommit).toBe(expected);
    }
    const config = await configFile({ daemon: { synchronousCommit: 'no' } });
    await expect(resolveSettings({ config }, {}, 'serve')).rejects.toThrow(
      /"daemon\.synchronousCommit" must be true or false, got "no"/,
    );
    expect(SETTINGS.synchronousCommit.kind.fromText('off')).toBe(false);
    expect(SETTINGS.synchronousCommit.kind.fromText('YES')).toBe(true);
  });

  it('zero intervals and deadlines are refused, in the file and in the library', async () => {
    for (const key of ['heartbeatIntervalMs', 'dbTimeoutMs', 'pollIntervalMs', 'budgetIntervalMs']) {
      const config = await configFile({ daemon: { [key]: 0 } });
      await expect(resolveSettings({ config }, {}, 'daemon')).rejects.toThrow(
        new RegExp(`"daemon\\.${key}" must be an integer >= \\d+, got 0`),
      );
    }
    let error: unknown;
    try {
      checkDaemonSettings({ heartbeatIntervalMs: 0, dbTimeoutMs: 0, maxRetries: 3, logger: () => {} });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).issues.map((i) => i.param)).toEqual([
      'heartbeatIntervalMs',
      'dbTimeoutMs',
    ]);
    expect((error as ValidationError).message).toMatch(/heartbeatIntervalMs must be an integer >= 10, got 0/);
    const db = await createTestDb({ max: 1 });
    try {
      expect(() => db.manager({ dbTimeoutMs: 0 })).toThrow(ValidationError);
      expect(() => db.manager({ modelConcurrencyLimits: { a: -1 } })).toThrow(
        /modelConcurrencyLimits\["a"\]/,
      );
    } finally {
      await db.close();
    }
  });

  it('the config file: unknown keys, wrong types and the two names of the default limit', async () => {
    expect(() => validateConfig({ nope: 1 }, 'f.json')).toThrow(
      /config file f\.json: unknown key "nope" \(known: /,
    );
    expect(() => validateConfig({ daemon: { modelConcurrencyLimits: {} } }, 'f.json')).toThrow(
      /unknown key "modelConcurrencyLimits" in "daemon"/,
    );
    expect(() => validateConfig({ models: { 'llama-3.1': { limit: 'x' } } }, 'f.json')).toThrow(
      /models\["llama-3\.1"\]\.limit must be an integer >= 0, got "x"/,
    );
    expect(() => validateConfig({ daemon: 3 }, 'f.json')).toThrow(/"daemon" must be an object/);
    expect(() => validateConfig([], 'f.json')).toThrow(/must be a JSON object/);
    const same = await configFile({ defaultLimit: 9, daemon: { defaultModelConcurrency: 9 } });
    expect((await resolveSettings({ config: same }, {}, 'run')).daemonConfig.defaultModelConcurrency).toBe(9);
    const clash = await configFile({ defaultLimit: 9, daemon: { defaultModelConcurrency: 7 } });
    await expect(resolveSettings({ config: clash }, {}, 'run')).rejects.toThrow(
      /"defaultLimit" and "daemon\.defaultModelConcurrency" disagree/,
    );
  });

  it('secrets never come from the file itself, and never appear in messages', async () => {
    const config = await configFile({ upstreamApiKeyEnv: 'MY_KEY', apiKeyEnv: 'MY_API_KEY' });
    const s = await resolveSettings({ config }, { MY_KEY: 'sk-1', MY_API_KEY: 'fsk-2' });
    expect(s.routing.upstreamApiKey).toBe('sk-1');
    expect(s.apiKey).toBe('fsk-2');
    expect(() => validateConfig({ upstreamApiKeyEnv: 'sk-not a variable name' }, 'f.json')).toThrow(
      /"upstreamApiKeyEnv" must be the name of an environment variable/,
    );
    expect(() => validateConfig({ metricsToken: 'x' }, 'f.json')).toThrow(/unknown key "metricsToken"/);
    const err = await resolveSettings({ metricsToken: '   ' }, {}, 'serve').catch((e) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).not.toContain('   "');
  });

  it('every flag, variable and config key of before still works', async () => {
    const config = await configFile({
      databaseUrl: 'postgres://u:pw@db/x',
      schema: 's1',
      dataDir: 'd1',
      port: 1,
      host: 'h1',
      upstream: 'http://u1.example/v1',
      upstreamApiKeyEnv: 'K1',
      models: { m1: { upstream: 'http://m1.example', apiKeyEnv: 'K2', limit: 2 } },
      defaultLimit: 3,
      server: 'http://s1.example/v1/',
      apiKeyEnv: 'K3',
      daemon: Object.fromEntries(
        Object.entries(DAEMON_DEFAULTS)
          .filter(
            ([k]) => !['modelConcurrencyLimits', 'modelRateLimits', 'defaultModelConcurrency'].includes(k),
          )
          .concat([['leaseMs', 5]]),
      ),
    });
    const s = await resolveSettings({ config }, { K1: 'k1', K2: 'k2', K3: 'k3' });
    expect(s).toMatchObject({
      databaseUrl: 'postgres://u:pw@db/x',
      schema: 's1',
      dataDir: 'd1',
      port: 1,
      host: 'h1',
      server: 'http://s1.example',
      apiKey: 'k3',
      routing: {
        upstream: 'http://u1.example',
        upstreamApiKey: 'k1',
        models: { m1: { upstream: 'http://m1.example', apiKey: 'k2', limit: 2 } },
        defaultLimit: 3,
      },
    });
    const env = {
      DATABASE_URL: 'postgres://e/x',
      FUSILLADE_SCHEMA: 'e1',
      FUSILLADE_DATA_DIR: 'e2',
      FUSILLADE_PORT: '2',
      FUSILLADE_HOST: 'e3',
      FUSILLADE_UPSTREAM: 'mock',
      FUSILLADE_UPSTREAM_API_KEY: 'e4',
      FUSILLADE_DEFAULT_LIMIT: '6',
      FUSILLADE_SERVER: 'http://e5.example',
      FUSILLADE_API_KEY: 'e6',
      FUSILLADE_METRICS_TOKEN: 'e7',
      FUSILLADE_EMBEDDED_USER: 'e8',
    };
    expect(await resolveSettings({}, env)).toMatchObject({
      databaseUrl: 'postgres://e/x',
      schema: 'e1',
      dataDir: 'e2',
      port: 2,
      host: 'e3',
      upstream: 'mock',
      upstreamApiKey: 'e4',
      defaultModelConcurrency: 6,
      server: 'http://e5.example',
      apiKey: 'e6',
      metricsToken: 'e7',
      embeddedUser: 'e8',
    });
    const withConfigEnv = await resolveSettings({}, { FUSILLADE_CONFIG: config, K1: 'k1' });
    expect(withConfigEnv.schema).toBe('s1');
    // Flags by commander attribute name, as the CLI's commands define them.
    const flags = {
      databaseUrl: '--database-url',
      schema: '--schema',
      dataDir: '--data-dir',
      port: '--port',
      host: '--host',
      upstream: '--upstream',
      upstreamApiKey: '--upstream-api-key',
      modelConcurrencyLimits: '--model-limit',
      defaultModelConcurrency: '--default-limit',
      daemon: '--no-daemon',
      metricsToken: '--metrics-token',
      server: '--server',
      apiKey: '--api-key',
      config: '--config',
      mockPort: '--port',
      mockLatencyMs: '--latency-ms',
    } as const;
    for (const [name, flag] of Object.entries(flags)) {
      expect(flagName((SETTINGS[name as SettingName] as SettingSpec).flag!)).toBe(flag);
    }
  });
});
