/**
 * A daemon's heartbeat: one update of its own row ($1 id, $2 stats jsonb, $3 its deadDaemonAfterMs).
 * Other daemons reclaim the requests of a daemon whose heartbeat is older than deadDaemonAfterMs
 * (reclaim.ts), or that lost its liveness lock (liveness.ts). A heartbeat also clears stopped_at: a
 * daemon declared lost while it was in fact alive (cut off from the database for longer than the
 * grace) resumes under the same id; its rows were handed back meanwhile, and its late writes fail
 * their guard (complete.ts). Returns whether the row had been marked stopped or its last heartbeat
 * was older than $3 (so it was, or may have been, declared lost: revived; the daemon then aborts
 * what it still sends, daemon.ts fenceAfterLost), and nothing if the row was removed.
 */
export function heartbeatSql(s: string): string {
  return `
UPDATE ${s}.daemons d SET heartbeat_at = now(), stats = $2, stopped_at = NULL
  FROM (SELECT stopped_at, heartbeat_at FROM ${s}.daemons WHERE id = $1) old
 WHERE d.id = $1
RETURNING d.id, (old.stopped_at IS NOT NULL
                 OR old.heartbeat_at < now() - $3 * interval '1 millisecond') AS revived`;
}

/** Registers a daemon ($1 id, $2 host, $3 pid, $4 version, $5 config jsonb, $6 liveness key bigint). */
export function registerDaemonSql(s: string): string {
  return `INSERT INTO ${s}.daemons (id, host, pid, version, config, liveness_key) VALUES ($1, $2, $3, $4, $5, $6)`;
}

/**
 * Marks a daemon stopped ($1 id) and releases its slot budgets (budget.ts); its remaining rows, if
 * any, become reclaimable at once.
 */
export function stopDaemonSql(s: string): string {
  return `
WITH released AS (DELETE FROM ${s}.model_budgets WHERE daemon_id = $1)
UPDATE ${s}.daemons SET stopped_at = now(), heartbeat_at = now() WHERE id = $1`;
}
