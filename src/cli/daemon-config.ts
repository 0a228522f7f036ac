import type { Settings } from '../config/settings.js';
import type { DaemonConfig } from '../dispatch/config.js';
import { createUpstreamRouter, type RoutingConfig } from '../dispatch/upstream-routing.js';

/**
 * The daemon configuration of every command that runs a daemon (serve, run, daemon): the daemon
 * settings resolved with one precedence (flag > environment > config file > default, as
 * src/config/settings.ts resolves them), and the router of `routing` (the settings' routing with the
 * mock's URL filled in), and the direct connection of --direct-database-url (the daemon's session
 * then bypasses the pooler). `extra` adds objects such as a logger.
 */
export function daemonConfigFor(
  settings: Settings,
  routing: RoutingConfig,
  extra: Partial<DaemonConfig> = {},
): Partial<DaemonConfig> {
  return {
    ...settings.daemonConfig,
    upstreamRouter: createUpstreamRouter(routing),
    ...(settings.directDatabaseUrl !== undefined ? { directConnection: settings.directDatabaseUrl } : {}),
    ...extra,
  };
}
