import { liveBatchSql } from '../../../domain/batch-lifecycle.js';

const LIVE = liveBatchSql('b');

/**
 * A live daemon can send a route's requests: the route is among those it published
 * (daemons.route_ids), or its credential is one the daemon sends to any URL upstream ("template").
 * `$dead` is deadDaemonAfterMs; `br`/`u` alias batch_routes and upstream_routes.
 */
function servingDaemons(s: string, dead: string): string {
  return `FROM ${s}.daemons d
         WHERE d.stopped_at IS NULL AND d.heartbeat_at > now() - ${dead} * interval '1 millisecond'
           AND (br.route_id = ANY (d.route_ids)
                OR (u.credential = ANY (d.any_upstream_credentials) AND u.upstream ~* '^https?://'))`;
}

/**
 * The batch has rows on the route waiting to be sent (one probe of requests_pending_route_idx per
 * model; a coalesced follower waits for its leader, not for a daemon).
 */
const PENDING_ON_ROUTE = (s: string) => `EXISTS (SELECT 1 FROM ${s}.requests r
                WHERE r.batch_id = br.batch_id AND r.model = br.model AND r.route_id = br.route_id AND r.state = 'pending'
                  AND r.coalesced_into IS NULL)`;

/**
 * Where these batches' requests go, per route: its upstream and credential, the models on it, how
 * many live daemons can send it, and whether a live batch has requests pending on it.
 * $1 uuid[] batch ids, $2 deadDaemonAfterMs.
 */
export function batchUpstreamsSql(s: string): string {
  return `
SELECT br.batch_id, u.upstream, u.credential, array_agg(br.model ORDER BY br.model) AS models,
       (SELECT count(*)::int ${servingDaemons(s, '$2')}) AS daemons,
       bool_or(${LIVE} AND ${PENDING_ON_ROUTE(s)}) AS pending
  FROM ${s}.batch_routes br
  JOIN ${s}.upstream_routes u ON u.id = br.route_id
  JOIN ${s}.batches b ON b.id = br.batch_id
 WHERE br.batch_id = ANY ($1::uuid[])
 GROUP BY br.batch_id, br.route_id, u.upstream, u.credential
 ORDER BY br.batch_id, u.upstream, u.credential`;
}

/** Live batches with requests pending on a route no live daemon can send ($1 deadDaemonAfterMs). */
export function waitingBatchesSql(s: string): string {
  return `
SELECT count(DISTINCT b.id)::int AS n
  FROM ${s}.batches b
  JOIN ${s}.batch_routes br ON br.batch_id = b.id
  JOIN ${s}.upstream_routes u ON u.id = br.route_id
 WHERE ${LIVE} AND NOT EXISTS (SELECT 1 ${servingDaemons(s, '$1')}) AND ${PENDING_ON_ROUTE(s)}`;
}
