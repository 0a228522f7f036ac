#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

/** Exits with `code` once the event loop drains, or after a grace period if a stray handle lingers. */
function finish(code) {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 3000).unref();
}

main(process.argv).then(
  (code) => finish(typeof code === 'number' ? code : 0),
  (err) => {
    console.error(`fusillade: ${err?.message ?? err}`);
    finish(1);
  },
);
