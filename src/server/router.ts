import type { Handler } from './context.js';

/** A tiny method + path router; `:name` segments match one path segment. */
export interface Route {
  method: string;
  /** The pattern, also the metrics label, e.g. "/v1/files/:id/content". */
  pattern: string;
  handler: Handler;
}

interface Compiled extends Route {
  regex: RegExp;
}

export type Match = { route: Route; params: string[] } | { route: null; allowed: string[] };

export class Router {
  private readonly routes: Compiled[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    const source = pattern
      .split('/')
      .map((seg) => (seg.startsWith(':') ? '([^/]+)' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    this.routes.push({ method, pattern, handler, regex: new RegExp(`^${source}/?$`) });
    return this;
  }

  /** The route for this method and path, or the methods the path allows (empty: unknown path). */
  match(method: string, path: string): Match {
    const allowed: string[] = [];
    for (const r of this.routes) {
      const m = r.regex.exec(path);
      if (!m) continue;
      if (r.method === method) {
        return { route: r, params: m.slice(1).map((p) => safeDecode(p)) };
      }
      allowed.push(r.method);
    }
    return { route: null, allowed };
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
