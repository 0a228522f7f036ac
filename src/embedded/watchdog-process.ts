/**
 * Entry of the embedded server's watchdog process (src/embedded/watchdog.ts), spawned detached by
 * the first process to attach; reads the server's URL and data directory from its environment.
 */
import { WATCHDOG_PGDATA_ENV, WATCHDOG_URL_ENV, watch } from './watchdog.js';

const url = process.env[WATCHDOG_URL_ENV];
const pgdata = process.env[WATCHDOG_PGDATA_ENV];
if (url && pgdata) {
  await watch(url, pgdata).catch(() => {});
}
process.exit(0);
