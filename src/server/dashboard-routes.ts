import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DashboardContext } from './dashboard-context.js';

/**
 * Placeholder until the dashboard lands (owned by the dashboard engineer): handles nothing, so the
 * server answers 404 for non-API paths.
 */
export async function handleDashboard(
  _req: IncomingMessage,
  _res: ServerResponse,
  _ctx: DashboardContext,
): Promise<boolean> {
  return false;
}
