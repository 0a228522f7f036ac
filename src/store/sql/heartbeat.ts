/**
 * A daemon's heartbeat: one update of its own row ($1 id, $2 stats jsonb). Other daemons reclaim the
 * requests of a daemon whose heartbeat is older than deadDaemonAfterMs (reclaim.ts). Returns the row
 * so a daemon learns if its row was removed.
 */
export function heartbeatSql(s: string): string {
  return `UPDATE ${s}.daemons SET heartbeat_at = now(), stats = $2 WHERE id = $1 RETURNING id`;
}

/** Registers a daemon ($1 id, $2 host, $3 pid, $4 version, $5 config jsonb). */
export function registerDaemonSql(s: string): string {
  return `INSERT INTO ${s}.daemons (id, host, pid, version, config) VALUES ($1, $2, $3, $4, $5)`;
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
