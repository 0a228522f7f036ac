// Mirrors bin/fusillade.js for the TypeScript source (node --import tsx).
import { main } from '../../../src/cli/main.js';

/** Exits with `code` once the event loop drains, or after a grace period if a stray handle lingers. */
function finish(code: number): void {
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
