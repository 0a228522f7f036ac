#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

/**
 * Exits with `code` once stdout and stderr have handed their last writes to the system: the command
 * has finished its work (it closed its pools, servers and daemon) when main() resolves, and waiting
 * for the event loop to drain on top of that only waited for sockets to finish closing (a few tens
 * to hundreds of ms after `run`, on a loaded machine). A grace period covers an output that never
 * drains (a reader that stopped reading).
 */
function finish(code) {
  process.exitCode = code;
  let pending = 2;
  const flushed = () => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
  setTimeout(() => process.exit(code), 3000).unref();
}

main(process.argv).then(
  (code) => finish(typeof code === 'number' ? code : 0),
  (err) => {
    console.error(`fusillade: ${err?.message ?? err}`);
    finish(1);
  },
);
