import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PostgresRequestManager } from '../store/request-manager.js';

/**
 * What the API server hands the dashboard's routes (src/server/dashboard-routes.ts): the manager,
 * the same API-key check as /v1, and the same JSON and error helpers.
 */
export interface DashboardContext {
  manager: PostgresRequestManager;
  /** The owner of the request's bearer key, or null (missing, unknown or revoked key). */
  authenticate(req: IncomingMessage): Promise<string | null>;
  /** JSON answer with Content-Type application/json (the x-request-id is already set). */
  sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void;
  /**
   * The OpenAI error envelope: either any error (mapped like the API's: 404 for not found, 400 for
   * validation, 503 when the database is down, else 500), or a status, message and optional code.
   */
  sendError(res: ServerResponse, error: unknown, message?: string, code?: string): void;
}
