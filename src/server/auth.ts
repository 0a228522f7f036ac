import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { PostgresRequestManager } from '../manager/request-manager.js';

/** The bearer token of a request, if any. */
export function bearerToken(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}

/** The request's API key: the bearer token (OpenAI's way), else `x-api-key` (Anthropic's way). */
export function apiKeyOf(req: IncomingMessage): string | null {
  const bearer = bearerToken(req);
  if (bearer) return bearer;
  const header = req.headers['x-api-key'];
  return typeof header === 'string' && header.trim() !== '' ? header.trim() : null;
}

/**
 * The owner of the request's API key, or null if it has none, an unknown one or a revoked one.
 * Checked against the database on every request, so a revoked key fails at once.
 */
export async function authenticate(
  manager: PostgresRequestManager,
  req: IncomingMessage,
): Promise<string | null> {
  const token = apiKeyOf(req);
  if (!token) return null;
  const key = await manager.apiKeys.verify(token);
  return key?.owner ?? null;
}

/**
 * Checks an Authorization header against a fixed bearer token in constant time (SHA-256 digests of
 * both, so neither the length nor a prefix of the token leaks through timing).
 */
export function bearerCheck(token: string): (req: IncomingMessage) => boolean {
  const want = createHash('sha256').update(token).digest();
  return (req) => {
    const got = bearerToken(req);
    return got !== null && timingSafeEqual(createHash('sha256').update(got).digest(), want);
  };
}
