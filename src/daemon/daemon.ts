import type { DaemonHandle, PostgresRequestManager } from '../store/request-manager.js';
import type { DaemonConfig } from './config.js';

/** Placeholder until the daemon lands (issue 3). */
export async function startDaemon(
  _manager: PostgresRequestManager,
  _config: DaemonConfig,
): Promise<DaemonHandle> {
  throw new Error('the daemon is not implemented yet');
}
