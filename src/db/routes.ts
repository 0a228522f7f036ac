import type pg from 'pg';
import type { RouteSpec, StoredRoute } from '../domain/upstream-route.js';
import { upsertRoutesSql } from './sql/batches/routes.js';

/** The stored routes of `specs` (inserted if new), in no particular order. */
export async function ensureRoutes(
  db: pg.ClientBase | pg.Pool,
  s: string,
  specs: readonly RouteSpec[],
): Promise<StoredRoute[]> {
  if (specs.length === 0) return [];
  const key = (r: RouteSpec) => `${r.upstream}\u0000${r.credential}`;
  const found = new Map<string, StoredRoute>();
  for (let round = 0; round < 5; round++) {
    const missing = specs.filter((r) => !found.has(key(r)));
    if (missing.length === 0) break;
    const { rows } = await db.query<StoredRoute>(upsertRoutesSql(s), [
      missing.map((r) => r.upstream),
      missing.map((r) => r.credential),
    ]);
    for (const r of rows) found.set(key(r), r);
  }
  if (specs.some((r) => !found.has(key(r)))) throw new Error('could not record the upstream routes');
  return [...found.values()];
}
