/**
 * Liveness from PostgreSQL (rule 2 of docs/decisions/0003): a daemon holds a session-level advisory lock
 * on its `daemons.liveness_key` over its long-lived session connection (src/daemon/listener.ts).
 * PostgreSQL releases it the moment that connection dies (15–45 ms after a SIGKILL, measured), so
 * the others can tell a dead daemon in about a second, where the heartbeat (kept as the fallback,
 * reclaim.ts) needs deadDaemonAfterMs. A frozen (SIGSTOPped) daemon keeps its lock: the heartbeat
 * catches it, and fencing (complete.ts) refuses its late writes either way.
 *
 * A live daemon may lose its session for a moment (a terminated backend, a network blip) while its
 * pool still works: it then heartbeats every 250 ms until it holds the lock again
 * (src/daemon/maintenance.ts). So a daemon is declared lost only when its lock was free at two
 * probes at least a grace period apart AND it has not heartbeaten since the first
 * (src/daemon/liveness.ts keeps the first sightings).
 *
 * The probe takes the others' locks with pg_try_advisory_xact_lock in an autocommit statement: a
 * lock held by its daemon is not granted (false), a free one is granted and released at the end of
 * the statement. Reading pg_locks instead would need the key split into classid/objid and reads
 * the whole shared lock table.
 */

/**
 * Other live daemons ($1 self id) whose liveness lock is free now, with their last heartbeat and
 * the database's clock. Bounded by the live daemons (daemons_heartbeat_idx is partial on them).
 */
export function probeLivenessSql(s: string): string {
  return `
WITH others AS MATERIALIZED (
  SELECT d.id, d.liveness_key, d.heartbeat_at FROM ${s}.daemons d
   WHERE d.stopped_at IS NULL AND d.liveness_key IS NOT NULL AND d.id <> $1
)
SELECT o.id, o.heartbeat_at, now() AS now FROM others o WHERE pg_try_advisory_xact_lock(o.liveness_key)`;
}

/**
 * Marks lost daemons stopped, first in the reclaim transaction (so the next statements release
 * their budgets and hand back their rows): $1 uuid[] ids, $2 timestamptz[] since (the first probe
 * that found each lock free). Re-checked here: still no heartbeat since then, and the lock still
 * free. It is then held until the transaction ends, so the daemon cannot take it back in between;
 * should it be alive after all, its next heartbeat clears stopped_at (heartbeat.ts).
 */
export function declareLostSql(s: string): string {
  return `
UPDATE ${s}.daemons d SET stopped_at = now()
  FROM unnest($1::uuid[], $2::timestamptz[]) AS l(id, since)
 WHERE d.id = l.id AND d.stopped_at IS NULL AND d.heartbeat_at < l.since
   AND pg_try_advisory_xact_lock(d.liveness_key)
RETURNING d.id`;
}

/** Takes this daemon's liveness lock on its session connection ($1 bigint key); true when held. */
export const takeLivenessLockSql = 'SELECT pg_try_advisory_lock($1::bigint) AS held';
