import { type Command, InvalidArgumentError, Option } from 'commander';
import { parseCount, parseModelLimit, parsePort } from '../config/settings.js';
import { UsageError } from '../config/usage-error.js';

/** Wraps a parser so that its UsageError becomes commander's one-line "invalid argument" error. */
function commanderParser<T>(parse: (value: string, previous: T) => T) {
  return (value: string, previous: T) => {
    try {
      return parse(value, previous);
    } catch (err) {
      if (err instanceof UsageError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

/** --database-url, --schema, --data-dir: where the queue lives. */
export function databaseOptions(cmd: Command): Command {
  return cmd
    .option(
      '--database-url <url>',
      'PostgreSQL URL (env DATABASE_URL); none = embedded PostgreSQL in --data-dir',
    )
    .option('--schema <name>', 'PostgreSQL schema of the tables (env FUSILLADE_SCHEMA)', undefined)
    .option('--data-dir <dir>', 'directory of the embedded PostgreSQL (env FUSILLADE_DATA_DIR)', undefined);
}

/** --upstream, --upstream-api-key, --model-limit, --default-limit: where requests go and how many at once. */
export function upstreamOptions(cmd: Command): Command {
  return cmd
    .option(
      '--upstream <url>',
      'upstream base URL for every model, or "mock" for the built-in mock (env FUSILLADE_UPSTREAM)',
    )
    .option('--upstream-api-key <key>', 'API key sent upstream (env FUSILLADE_UPSTREAM_API_KEY)')
    .addOption(
      new Option(
        '--model-limit <model=n>',
        'concurrency limit of one model, across all daemons (repeatable)',
      ).argParser(commanderParser(parseModelLimit)),
    )
    .addOption(
      new Option(
        '--default-limit <n>',
        'concurrency limit of models not listed (env FUSILLADE_DEFAULT_LIMIT)',
      ).argParser(commanderParser((v) => parseCount(v, '--default-limit'))),
    );
}

/** --port, --host for servers. */
export function listenOptions(cmd: Command, what: string): Command {
  return cmd
    .addOption(
      new Option('--port <n>', `port of the ${what} (env FUSILLADE_PORT; default 8080)`).argParser(
        commanderParser((v) => parsePort(v)),
      ),
    )
    .option('--host <host>', `interface of the ${what} (env FUSILLADE_HOST; default 127.0.0.1)`);
}

/** --server, --api-key for commands that talk to a running `fusillade serve`. */
export function clientOptions(cmd: Command): Command {
  return cmd
    .option(
      '--server <url>',
      'URL of a running fusillade serve (env FUSILLADE_SERVER; default http://127.0.0.1:8080)',
    )
    .option('--api-key <key>', 'API key from `fusillade keys create` (env FUSILLADE_API_KEY)');
}
