/**
 * Hands back in-flight rows whose owner is gone (rule 2 of docs/decisions/0003): rows of daemons whose
 * heartbeat is older than $1 ms (or that stopped), and rows whose lease ran out. Any live daemon
 * runs it periodically. Owner-less rows go back to pending with their attempt kept (a crash may
 * have sent them), so they count against maxRetries; the dead daemon's late writes fail their
 * daemon_id/attempt guard.
 *
 * The in-flight set is small (bounded by the limits and what daemons hold ahead): both predicates
 * are tested on it, read through requests_inflight_idx, never the backlog (the dead-daemon arm needs
 * every in-flight row, so an index on lease_expires_at saved nothing; migration 0023 dropped it).
 * Runs in one transaction after releaseDeadBudgetsSql.
 */
export function reclaimSql(s: string): string {
  return `
UPDATE ${s}.requests r
   SET state = 'pending', daemon_id = NULL, claimed_at = NULL, lease_expires_at = NULL,
       error_code = coalesce(r.error_code, 'daemon_lost'),
       error_message = coalesce(r.error_message, 'the daemon sending this request stopped responding')
 WHERE r.state IN ('claimed', 'processing')
   AND (r.lease_expires_at < now()
        OR r.daemon_id IN (SELECT d.id FROM ${s}.daemons d
                            WHERE d.stopped_at IS NOT NULL
                               OR d.heartbeat_at < now() - $1 * interval '1 millisecond'))
RETURNING r.id, r.batch_id, r.model`;
}

/**
 * Deletes the budgets (budget.ts) of daemons that stopped or whose heartbeat is older than $1 ms,
 * run first in the reclaim transaction. Deleting waits for any claim still holding the row (FOR KEY
 * SHARE, claim.ts) to commit, so the reclaim's next statement (a new snapshot) also sees and hands
 * back what such a claim took; a later claim of that daemon finds no budget and takes nothing.
 * Daemons without a row in daemons (removed by hand) lose their budgets too.
 */
export function releaseDeadBudgetsSql(s: string): string {
  return `
DELETE FROM ${s}.model_budgets b
 WHERE NOT EXISTS (SELECT 1 FROM ${s}.daemons d
                    WHERE d.id = b.daemon_id AND d.stopped_at IS NULL
                      AND d.heartbeat_at >= now() - $1 * interval '1 millisecond')
RETURNING b.daemon_id, b.model, b.slots`;
}

/**
 * Hands back this daemon's own in-flight rows that it does not hold in memory ($1 daemon, $2 uuid[]
 * ids it holds): after a claim whose commit outcome is unknown (the connection dropped mid-COMMIT,
 * or the daemon gave up on it at its deadline and it committed afterwards: src/daemon/pipe.ts runs
 * this once such a claim's outcome is back) such rows would otherwise wait for their lease. The
 * attempt is undone: they were never sent.
 */
export function reclaimOrphansSql(s: string): string {
  return `
UPDATE ${s}.requests r
   SET state = 'pending', daemon_id = NULL, claimed_at = NULL, lease_expires_at = NULL,
       attempt = greatest(r.attempt - 1, 0)
 WHERE r.state IN ('claimed', 'processing') AND r.daemon_id = $1 AND NOT (r.id = ANY($2::uuid[]))
RETURNING r.id`;
}
