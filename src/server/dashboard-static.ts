import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dashboardDomainModule } from './dashboard-domain.js';
import { ApiError } from './http.js';

/**
 * The web dashboard's files: plain ES modules and CSS from the package's dashboard/ folder (no build
 * step: what is served is the source that `npm run typecheck` checks), and /assets/domain.js,
 * generated from src/domain. Its JSON routes are on the API's router (routes/dashboard.ts).
 * Returns false for paths that are not the dashboard's, so the server answers 404.
 */
export async function serveDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<boolean> {
  if (path === '/' || path === '/index.html') return serveStatic(req, res, 'index.html');
  if (path === '/assets/domain.js') return serveContent(req, res, DOMAIN_MODULE, CONTENT_TYPES['.js']!);
  if (path.startsWith('/assets/')) return serveStatic(req, res, path.slice(1));
  return false;
}

const DOMAIN_MODULE = Buffer.from(dashboardDomainModule());

// ---------------------------------------------------------------------------------------------
// Static files

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Scripts, styles and data only from this server; nothing inline, nothing from elsewhere. */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
  "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/** The package's dashboard/ folder, found upwards from this module (src/ under tsx, dist/src/ when built). */
function findDashboardRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'dashboard');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('the dashboard/ folder is missing from the package');
}

let dashboardRoot: string | undefined;

function refuseMethod(req: IncomingMessage): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    throw new ApiError(405, `Method ${req.method} is not allowed here.`, {
      code: 'method_not_allowed',
      headers: { allow: 'GET, HEAD' },
    });
  }
}

async function serveStatic(req: IncomingMessage, res: ServerResponse, relative: string): Promise<boolean> {
  refuseMethod(req);
  dashboardRoot ??= findDashboardRoot();
  let decoded: string;
  try {
    decoded = decodeURIComponent(relative);
  } catch {
    return false;
  }
  // Resolve, then check containment: "..", encoded slashes and absolute paths cannot leave the folder.
  const file = resolve(dashboardRoot, decoded);
  const type = CONTENT_TYPES[extname(file)];
  if (decoded.includes('\0') || !file.startsWith(dashboardRoot + sep) || type === undefined) return false;
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch {
    return false;
  }
  return serveContent(req, res, content, type);
}

function serveContent(req: IncomingMessage, res: ServerResponse, content: Buffer, type: string): boolean {
  refuseMethod(req);
  res.writeHead(200, {
    'content-type': type,
    'content-length': content.length,
    // Small files that change with each release: revalidate rather than serve a stale dashboard.
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    ...(type.startsWith('text/html')
      ? { 'content-security-policy': CSP, 'referrer-policy': 'no-referrer' }
      : {}),
  });
  res.end(req.method === 'HEAD' ? undefined : content);
  return true;
}
