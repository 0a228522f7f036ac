import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withoutCredentials } from '../../src/cli/upstream.js';
import { redactUrl, resolveSettings } from '../../src/config/settings.js';
import { UsageError } from '../../src/config/usage-error.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { closedPort, runCli, SHIPPED_BIN, startCli, waitFor, writeBatchInput } from './support/cli.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fusillade-cli-usage-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A user-facing error: one line on stderr, no stack trace. */
function expectOneLineError(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  expect(lines[0]).toMatch(pattern);
  expect(stderr).not.toMatch(/\n\s+at /);
}

describe('help', () => {
  it('the shipped bin prints help with examples and exits 0', async () => {
    const r = await runCli(['--help'], { shipped: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: fusillade');
    expect(r.stdout).toContain('Examples:');
    expect(SHIPPED_BIN).toMatch(/bin\/fusillade\.js$/);
  });

  it.each([
    'serve',
    'daemon',
    'run',
    'migrate',
    'keys create',
    'keys list',
    'keys revoke',
    'keys set-weight',
    'webhooks add',
    'webhooks list',
    'webhooks remove',
    'webhooks enable',
    'submit',
    'status',
    'results',
    'cancel',
    'mock-upstream',
  ])('%s --help shows examples', async (command) => {
    const r = await runCli([...command.split(' '), '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Examples:\n\s+\$ fusillade /);
  });
});

describe('bad input gets a one-line error and a non-zero status', () => {
  it('unknown command and unknown flag', async () => {
    const a = await runCli(['frobnicate']);
    expect(a.code).toBe(2);
    expectOneLineError(a.stderr, /unknown command 'frobnicate'/);
    const b = await runCli(['run', 'x.jsonl', '-o', 'y', '--upstream', 'mock', '--bogus']);
    expect(b.code).toBe(2);
    expectOneLineError(b.stderr, /unknown option '--bogus'/);
  });

  it('bad flag values name the flag', async () => {
    const limit = await runCli(['run', 'x.jsonl', '-o', 'y', '--upstream', 'mock', '--model-limit', 'gpt']);
    expect(limit.code).toBe(2);
    expectOneLineError(limit.stderr, /--model-limit must look like MODEL=N/);
    const port = await runCli(['serve', '--port', 'eighty']);
    expect(port.code).toBe(2);
    expectOneLineError(port.stderr, /--port must be a port number/);
    const upstream = await runCli(['run', 'x.jsonl', '-o', 'y', '--upstream', 'ftp://nope']);
    expect(upstream.code).toBe(2);
    expectOneLineError(upstream.stderr, /--upstream must be an http\(s\) URL or "mock"/);
  });

  it('a missing input file, a bad JSONL line, a bad config file', async () => {
    const missing = await runCli([
      'run',
      join(dir, 'nope.jsonl'),
      '-o',
      join(dir, 'o.jsonl'),
      '--upstream',
      'mock',
    ]);
    expect(missing.code).toBe(2);
    expectOneLineError(missing.stderr, /^fusillade: cannot read input .*nope\.jsonl: no such file$/);

    const bad = join(dir, 'bad.jsonl');
    await writeBatchInput(bad, 2);
    await writeFile(bad, `${(await import('node:fs')).readFileSync(bad, 'utf8')}{not json\n`);
    const client = await runCli(['submit', bad, '--api-key', 'fsk_x', '--server', 'http://127.0.0.1:9']);
    expect(client.code).toBe(2);
    expectOneLineError(client.stderr, /bad\.jsonl: line 3: the line is not (valid JSON|a JSON object)/);

    const config = join(dir, 'config.json');
    await writeFile(config, '{"port": "eighty"}');
    const cfg = await runCli(['migrate', '--config', config]);
    expect(cfg.code).toBe(2);
    expectOneLineError(
      cfg.stderr,
      /config file .*config\.json: "port" must be a port number \(0-65535\), got "eighty"/,
    );
  });

  it('an unreachable database and an unreachable server', async () => {
    const port = await closedPort();
    const db = await runCli([
      'migrate',
      '--database-url',
      `postgres://postgres:secret@127.0.0.1:${port}/test`,
    ]);
    expect(db.code).toBe(1);
    expectOneLineError(
      db.stderr,
      new RegExp(
        `cannot use the database at postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${port}/test: .*ECONNREFUSED`,
      ),
    );
    expect(db.stderr).not.toContain('secret');
    const server = await runCli(['status', '--server', `http://127.0.0.1:${port}`, '--api-key', 'fsk_x']);
    expect(server.code).toBe(1);
    expectOneLineError(
      server.stderr,
      new RegExp(`cannot reach the server http://127\\.0\\.0\\.1:${port}/v1: ECONNREFUSED`),
    );
  });

  it('an unreachable upstream stops `run` before anything is stored', async () => {
    const input = join(dir, 'ok.jsonl');
    await writeBatchInput(input, 3);
    const port = await closedPort();
    const r = await runCli([
      'run',
      input,
      '-o',
      join(dir, 'out.jsonl'),
      '--upstream',
      `http://127.0.0.1:${port}`,
      '--database-url',
      TEST_DATABASE_URL,
      '--schema',
      'cli_never_created',
    ]);
    expect(r.code).toBe(1);
    expectOneLineError(
      r.stderr,
      new RegExp(`cannot reach the upstream http://127\\.0\\.0\\.1:${port}: ECONNREFUSED`),
    );
  });

  it('an upstream that fails while the input is stored leaves nothing stored', async () => {
    // The probe runs beside the store; the input's transaction waits for its answer. This upstream
    // holds the probe until the COPY of the input is under way, then drops the connection.
    const input = join(dir, 'late.jsonl');
    await writeBatchInput(input, 3);
    const schema = `cli_late_probe_${process.pid}`;
    const admin = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
    const held: Socket[] = [];
    const upstream = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const port = (upstream.address() as { port: number }).port;
    try {
      const run = startCli([
        'run',
        input,
        '-o',
        join(dir, 'late-out.jsonl'),
        '--upstream',
        `http://127.0.0.1:${port}`,
        '--database-url',
        TEST_DATABASE_URL,
        '--schema',
        schema,
      ]);
      await waitFor(async () => {
        const { rows } = await admin.query(
          `SELECT 1 FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active'`,
          [`COPY "${schema}".request_templates%`],
        );
        return rows.length > 0 || run.exitCode !== null;
      });
      expect(held.length).toBe(1);
      for (const socket of held) socket.destroy();
      const r = await run.exited;
      expect(r.code).toBe(1);
      expectOneLineError(
        r.stderr,
        new RegExp(`cannot reach the upstream http://127\\.0\\.0\\.1:${port}: ECONNRESET`),
      );
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.files`);
      expect(rows[0].n).toBe(0);
    } finally {
      upstream.close();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
  });

  it('--verbose adds the stack trace', async () => {
    const r = await runCli([
      '--verbose',
      'migrate',
      '--database-url',
      'postgres://postgres@127.0.0.1:9/test',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});

describe('settings precedence: flags > environment > config file', () => {
  it('resolves each source in order', async () => {
    const config = join(dir, 'precedence.json');
    await writeFile(
      config,
      JSON.stringify({
        port: 7001,
        host: '0.0.0.0',
        schema: 'from_file',
        upstream: 'http://file.example/v1/',
        models: { 'gpt-a': { limit: 3 }, 'gpt-b': { limit: 5, upstream: 'http://b.example' } },
        defaultLimit: 9,
        daemon: { maxRetries: 2 },
      }),
    );
    const fileOnly = await resolveSettings({ config }, {});
    expect(fileOnly).toMatchObject({ port: 7001, host: '0.0.0.0', schema: 'from_file' });
    expect(fileOnly.routing).toMatchObject({ upstream: 'http://file.example', defaultLimit: 9 });
    expect(fileOnly.daemonConfig).toEqual({
      maxRetries: 2,
      defaultModelConcurrency: 9,
      modelConcurrencyLimits: { 'gpt-a': 3, 'gpt-b': 5 },
    });

    const env = {
      FUSILLADE_PORT: '7002',
      FUSILLADE_SCHEMA: 'from_env',
      FUSILLADE_UPSTREAM_API_KEY: 'sk-env',
    };
    const withEnv = await resolveSettings({ config }, env);
    expect(withEnv).toMatchObject({ port: 7002, schema: 'from_env', host: '0.0.0.0' });
    expect(withEnv.routing.upstreamApiKey).toBe('sk-env');

    const withFlags = await resolveSettings(
      { config, port: 7003, upstreamApiKey: 'sk-flag', modelLimit: { 'gpt-a': 7 } },
      env,
    );
    expect(withFlags.port).toBe(7003);
    expect(withFlags.routing.upstreamApiKey).toBe('sk-flag');
    expect(withFlags.routing.models).toEqual({
      'gpt-a': { limit: 7 },
      'gpt-b': { limit: 5, upstream: 'http://b.example' },
    });

    // The metrics token: flag over environment, never from the file; empty is refused.
    expect((await resolveSettings({ config }, {})).metricsToken).toBeUndefined();
    expect((await resolveSettings({}, { FUSILLADE_METRICS_TOKEN: 'mt-env' })).metricsToken).toBe('mt-env');
    expect(
      (await resolveSettings({ metricsToken: 'mt-flag' }, { FUSILLADE_METRICS_TOKEN: 'mt-env' }))
        .metricsToken,
    ).toBe('mt-flag');
    await expect(resolveSettings({ metricsToken: ' ' }, {})).rejects.toThrow(
      /--metrics-token must be non-empty/,
    );

    const defaults = await resolveSettings({}, {});
    expect(defaults).toMatchObject({
      port: 8080,
      host: '127.0.0.1',
      schema: 'fusillade',
      dataDir: '.fusillade',
    });
    expect(defaults.databaseUrl).toBeUndefined();
    await expect(resolveSettings({}, { FUSILLADE_PORT: 'x' })).rejects.toBeInstanceOf(UsageError);
  });
});

describe('secrets stay out of messages', () => {
  it('drops credentials from upstream and database URLs', () => {
    expect(withoutCredentials('https://user:sk-secret@api.example.com/v1')).toBe(
      'https://api.example.com/v1',
    );
    expect(redactUrl('postgres://app:pw@db:5432/x')).toBe('postgres://app:***@db:5432/x');
  });
});
