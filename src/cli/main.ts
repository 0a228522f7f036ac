// First: pg's socket module loads without Node's undici (src/db/pg-runtime.ts).
import '../db/pg-runtime.js';
import { Command, CommanderError } from 'commander';
import type { CommandName } from '../config/schema.js';
import { type CliFlags, resolveSettings, type Settings } from '../config/settings.js';
import { UsageError } from '../config/usage-error.js';
import { FusilladeError } from '../domain/errors.js';
import { globalOptions, settingOptions } from './options.js';

/** What every command receives: resolved settings (flags > env > config file) and the raw flags. */
export interface CommandContext {
  settings: Settings;
  flags: CliFlags & Record<string, unknown>;
  verbose: boolean;
}

type Handler = (ctx: CommandContext, ...args: string[]) => Promise<number>;

// Commands load on use: `--help` and client commands start without loading pg, undici or the server.
const commands = {
  serve: async () => (await import('./commands/serve.js')).serveCommand,
  daemon: async () => (await import('./commands/daemon.js')).daemonCommand,
  run: async () => (await import('./commands/run.js')).runCommand,
  migrate: async () => (await import('./commands/migrate.js')).migrateCommand,
  keysCreate: async () => (await import('./commands/keys.js')).keysCreate,
  keysList: async () => (await import('./commands/keys.js')).keysList,
  keysRevoke: async () => (await import('./commands/keys.js')).keysRevoke,
  keysSetWeight: async () => (await import('./commands/keys.js')).keysSetWeight,
  webhooksAdd: async () => (await import('./commands/webhooks.js')).webhooksAdd,
  webhooksList: async () => (await import('./commands/webhooks.js')).webhooksList,
  webhooksRemove: async () => (await import('./commands/webhooks.js')).webhooksRemove,
  webhooksEnable: async () => (await import('./commands/webhooks.js')).webhooksEnable,
  submit: async () => (await import('./commands/client.js')).submitCommand,
  status: async () => (await import('./commands/client.js')).statusCommand,
  results: async () => (await import('./commands/client.js')).resultsCommand,
  cancel: async () => (await import('./commands/client.js')).cancelCommand,
  purge: async () => (await import('./commands/purge.js')).purgeCommand,
  reroute: async () => (await import('./commands/reroute.js')).rerouteCommand,
  mockUpstream: async () => (await import('./commands/mock-upstream.js')).mockUpstreamCommand,
} satisfies Record<string, () => Promise<Handler>>;

const examples = (lines: string[]) => `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;

/**
 * The `fusillade` command line. Returns the exit status instead of exiting, so it can be called
 * from tests; bin/fusillade.js sets process.exitCode from it.
 */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  let verbose = argv.includes('--verbose');
  const program = new Command('fusillade');
  const act =
    (name: CommandName, load: () => Promise<Handler>) =>
    async (...params: unknown[]) => {
      const command = params[params.length - 1] as Command;
      const flags = command.optsWithGlobals<CliFlags & Record<string, unknown>>();
      verbose = flags.verbose === true;
      const args = params.slice(0, -2).filter((p): p is string => typeof p === 'string');
      const settings = await resolveSettings(flags, process.env, name);
      const handler = await load();
      exitCode = await handler({ settings, flags, verbose }, ...args);
    };

  globalOptions(program)
    .description('Send large batches of LLM/HTTP requests reliably, with PostgreSQL as the queue.')
    .option('--verbose', 'show stack traces and more detail on errors')
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText(
      'after',
      examples([
        'fusillade run requests.jsonl -o results.jsonl --upstream mock',
        'fusillade run requests.jsonl -o results.jsonl --upstream https://api.openai.com --upstream-api-key $OPENAI_API_KEY',
        'fusillade serve --upstream https://api.openai.com --model-limit gpt-4o-mini=32',
        'fusillade keys create --owner alice',
        'fusillade submit requests.jsonl --wait --api-key $FUSILLADE_API_KEY',
      ]),
    );

  settingOptions(
    program.command('serve').description('run the OpenAI-compatible Batch API server (and the daemon)'),
    'serve',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade serve --upstream mock',
        'fusillade serve --port 8080 --database-url postgres://localhost/fusillade --upstream https://api.openai.com',
        'FUSILLADE_UPSTREAM_API_KEY=sk-... fusillade serve --upstream https://api.openai.com --default-limit 64',
      ]),
    )
    .action(act('serve', commands.serve));

  settingOptions(
    program.command('daemon').description('run only the daemon that sends queued requests'),
    'daemon',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade daemon --database-url postgres://db/fusillade --upstream https://api.openai.com',
        'fusillade daemon --upstream mock --model-limit gpt-4o-mini=8',
      ]),
    )
    .action(act('daemon', commands.daemon));

  settingOptions(
    program
      .command('run')
      .description('send every request of an OpenAI batch JSONL file and write the results (resumable)')
      .argument('<input>', 'OpenAI batch input file (.jsonl)')
      .requiredOption('-o, --output <file>', 'where to write the output JSONL (successful responses)')
      .option('--errors <file>', 'where to write the error JSONL (default: <output>.errors.jsonl)')
      .option('--completion-window <window>', 'deadline for the whole run, e.g. 24h', '24h')
      .option('--coalesce', 'send identical requests (same model and body) once; every line gets the answer'),
    'run',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade run requests.jsonl -o out.jsonl --upstream mock',
        'fusillade run requests.jsonl -o out.jsonl --errors errors.jsonl --upstream https://api.openai.com --model-limit gpt-4o-mini=64',
        'fusillade run requests.jsonl -o out.jsonl --database-url postgres://localhost/fusillade --upstream http://127.0.0.1:8000',
        '# re-running the same command resumes: completed requests are not sent again',
      ]),
    )
    .action(act('run', commands.run));

  settingOptions(program.command('migrate').description('create or upgrade the database schema'), 'migrate')
    .addHelpText(
      'after',
      examples([
        'fusillade migrate --database-url postgres://localhost/fusillade',
        'fusillade migrate --schema batches',
      ]),
    )
    .action(act('migrate', commands.migrate));

  settingOptions(
    program
      .command('purge')
      .description('remove expired, deleted and (with a retention) old finished data now, and say what went')
      .option(
        '--older-than <duration>',
        'also batches finished longer ago (e.g. 30d, 12h, 0s); default: retention.finishedBatches',
      )
      .option('--dry-run', 'say what would be removed, removing nothing'),
    'purge',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade purge --database-url postgres://localhost/fusillade',
        'fusillade purge --older-than 30d --dry-run',
      ]),
    )
    .action(act('purge', commands.purge));

  settingOptions(
    program
      .command('reroute')
      .description(
        "move a batch's unsent requests to the upstream (and key) given here; daemons serving it send them",
      )
      .argument('<batch>', 'batch id (batch_… or the UUID)'),
    'reroute',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade reroute batch_0123… --upstream https://api.openai.com --upstream-api-key $OPENAI_API_KEY',
        "fusillade reroute batch_0123… --config fusillade.json  # the models' routes of the config file",
      ]),
    )
    .action(act('reroute', commands.reroute));

  const keys = program
    .command('keys')
    .description('manage API keys of the Batch API server')
    .addHelpText(
      'after',
      examples([
        'fusillade keys create --owner alice',
        'fusillade keys list',
        'fusillade keys revoke KEY_ID',
        'fusillade keys set-weight --owner alice 3',
      ]),
    );
  settingOptions(
    keys
      .command('create')
      .description('create an API key (printed once, as the last line)')
      .requiredOption('--owner <name>', 'owner of the files and batches made with the key')
      .option('--name <label>', 'a label for the key'),
    'keys',
  )
    .addHelpText(
      'after',
      examples(['fusillade keys create --owner alice', 'KEY=$(fusillade keys create --owner ci | tail -1)']),
    )
    .action(act('keys', commands.keysCreate));
  settingOptions(
    keys
      .command('list')
      .description('list API keys (never the keys themselves)')
      .option('--owner <name>', 'only this owner'),
    'keys',
  )
    .addHelpText('after', examples(['fusillade keys list', 'fusillade keys list --owner alice']))
    .action(act('keys', commands.keysList));
  settingOptions(
    keys
      .command('revoke')
      .description('revoke an API key')
      .argument('<id>', 'key id or prefix, from `keys list`'),
    'keys',
  )
    .addHelpText('after', examples(['fusillade keys revoke 7f0c1b2e-...']))
    .action(act('keys', commands.keysRevoke));
  settingOptions(
    keys
      .command('set-weight')
      .description("set an owner's weight in the fair share of each model's slots (default 1)")
      .requiredOption('--owner <name>', 'the owner (of API keys, files and batches)')
      .argument('<weight>', 'a number above 0: weight 3 gets three times the slots of weight 1'),
    'keys',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade keys set-weight --owner alice 3',
        'fusillade keys set-weight --owner batch-jobs 0.5',
      ]),
    )
    .action(act('keys', commands.keysSetWeight));

  const webhooks = program
    .command('webhooks')
    .description(
      "manage an owner's webhook receivers (batch.completed, batch.failed, batch.expired, batch.cancelled)",
    )
    .addHelpText(
      'after',
      examples([
        'fusillade webhooks add --owner alice --url https://example.com/hooks',
        'fusillade webhooks list --owner alice',
        'fusillade webhooks remove we_...',
      ]),
    );
  settingOptions(
    webhooks
      .command('add')
      .description('add a receiver; prints its signing secret (whsec_…) once, as the last line')
      .requiredOption('--owner <name>', 'owner whose batches the receiver hears about')
      .requiredOption('--url <url>', 'receiver URL (http or https)')
      .option(
        '--events <list>',
        'comma-separated events (default all: batch.completed,batch.failed,batch.expired,batch.cancelled)',
      ),
    'webhooks',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade webhooks add --owner alice --url https://example.com/hooks --events batch.completed',
        'SECRET=$(fusillade webhooks add --owner alice --url https://example.com/hooks | tail -1)',
      ]),
    )
    .action(act('webhooks', commands.webhooksAdd));
  settingOptions(
    webhooks
      .command('list')
      .description('list webhook receivers and their state (never their secrets)')
      .option('--owner <name>', 'only this owner'),
    'webhooks',
  )
    .addHelpText('after', examples(['fusillade webhooks list', 'fusillade webhooks list --owner alice']))
    .action(act('webhooks', commands.webhooksList));
  settingOptions(
    webhooks
      .command('remove')
      .description('remove a webhook receiver')
      .argument('<id>', 'receiver id (we_…)'),
    'webhooks',
  )
    .addHelpText('after', examples(['fusillade webhooks remove we_0123...']))
    .action(act('webhooks', commands.webhooksRemove));
  settingOptions(
    webhooks
      .command('enable')
      .description('enable a webhook receiver that was disabled after repeated failures')
      .argument('<id>', 'receiver id (we_…)'),
    'webhooks',
  )
    .addHelpText('after', examples(['fusillade webhooks enable we_0123...']))
    .action(act('webhooks', commands.webhooksEnable));

  settingOptions(
    program
      .command('submit')
      .description('upload a batch file to a running server and create a batch')
      .argument(
        '<file>',
        'batch input file (.jsonl): OpenAI lines, or {custom_id, params} with --format anthropic',
      )
      .option(
        '--format <format>',
        'openai (upload + /v1/batches) or anthropic (/v1/messages/batches, a Message Batch)',
        'openai',
      )
      .option('--wait', 'wait for the batch to finish, showing progress')
      .option('-o, --output <file>', 'with --wait: write the output file (anthropic: the results) here')
      .option('--errors <file>', 'with --wait: write the error file here (openai)')
      .option('--completion-window <window>', 'completion window', '24h'),
    'submit',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade submit requests.jsonl --api-key $FUSILLADE_API_KEY',
        'fusillade submit requests.jsonl --wait -o out.jsonl --server http://127.0.0.1:8080 --api-key sk-...',
        'fusillade submit --format anthropic messages.jsonl --wait -o results.jsonl',
      ]),
    )
    .action(act('submit', commands.submit));
  settingOptions(
    program
      .command('status')
      .description("show one batch, or list the key owner's batches")
      .argument('[batch]', 'batch id'),
    'status',
  )
    .addHelpText('after', examples(['fusillade status', 'fusillade status batch_...']))
    .action(act('status', commands.status));
  settingOptions(
    program
      .command('results')
      .description("download a batch's output (and error) file")
      .argument('<batch>', 'batch id (batch_… or msgbatch_…)')
      .requiredOption('-o, --output <file>', 'where to write the output JSONL')
      .option('--errors <file>', 'where to write the error JSONL'),
    'results',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade results batch_... -o out.jsonl --errors errors.jsonl',
        'fusillade results msgbatch_... -o results.jsonl',
      ]),
    )
    .action(act('results', commands.results));
  settingOptions(
    program
      .command('cancel')
      .description('cancel a batch')
      .argument('<batch>', 'batch id (batch_… or msgbatch_…)'),
    'cancel',
  )
    .addHelpText('after', examples(['fusillade cancel batch_...']))
    .action(act('cancel', commands.cancel));

  settingOptions(
    program
      .command('mock-upstream')
      .description('run the built-in mock OpenAI-compatible upstream (for trying fusillade offline)'),
    'mock-upstream',
  )
    .addHelpText(
      'after',
      examples([
        'fusillade mock-upstream --port 9000',
        'fusillade mock-upstream --port 9000 --latency-ms 300 --rpm 600 --tpm 60000',
        'fusillade run in.jsonl -o out.jsonl --upstream http://127.0.0.1:9000',
      ]),
    )
    .action(act('mock-upstream', commands.mockUpstream));

  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (err) {
    return reportError(err, verbose);
  }
}

/** One line on stderr; the stack only with --verbose. */
function reportError(err: unknown, verbose: boolean): number {
  if (err instanceof CommanderError) {
    // commander has printed its message (or the help) already.
    return err.code === 'commander.helpDisplayed' ||
      err.code === 'commander.help' ||
      err.code === 'commander.version'
      ? 0
      : 2;
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`fusillade: ${message.split('\n')[0]}\n`);
  if (verbose && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  if (err instanceof UsageError) return err.exitCode;
  if (err instanceof FusilladeError) return 1;
  return 1;
}
