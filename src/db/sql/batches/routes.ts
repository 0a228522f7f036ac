/**
 * Routes (upstream_routes, src/domain/upstream-route.ts): a handful of rows, created on first use
 * and never deleted. $1 text[] upstreams, $2 text[] credentials (parallel). Returns the ids of those
 * that exist or were inserted by this statement; one inserted concurrently by another transaction
 * that committed after this statement's snapshot is missing (ensureRoutes asks again).
 */
export function upsertRoutesSql(s: string): string {
  return `
WITH want AS (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS w(upstream, credential)),
ins AS (
  INSERT INTO ${s}.upstream_routes (upstream, credential) SELECT upstream, credential FROM want
  ON CONFLICT (upstream, credential) DO NOTHING
  RETURNING id, upstream, credential
)
SELECT id, upstream, credential FROM ins
UNION ALL
SELECT u.id, u.upstream, u.credential FROM want w JOIN ${s}.upstream_routes u USING (upstream, credential)`;
}

/** What a daemon serves ($1 id, $2 int[] route ids, $3 text[] credentials it sends to any upstream). */
export function publishDaemonRoutesSql(s: string): string {
  return `UPDATE ${s}.daemons SET route_ids = $2, any_upstream_credentials = $3 WHERE id = $1`;
}
