import { claimCtes, claimUpdate } from './claim.js';
import { completeUpdateSql } from './complete.js';

/**
 * The daemon's hot statement: writes finished attempts (complete.ts) and claims (claim.ts) in ONE
 * autocommit statement: one round trip and one WAL flush per flush of the daemon. With per-daemon
 * budgets (budget.ts) there is no transaction around it and no global lock: a daemon runs several
 * of these at once on separate connections (SKIP LOCKED keeps them apart), each started as soon as
 * attempts finish.
 *
 * The daemon counts its slots locally (a slot is free once the HTTP attempt is over, even before
 * its row is written), so the claim's cap needs nothing from the write; the two UPDATEs never touch
 * the same row (processing vs pending).
 *
 * Measured (20,000-row batch, 50 rows written and 50 claimed per cycle, 2-core machine under load):
 * inside BEGIN + lock model rows / COMMIT, p50 12.2 ms; the same wrapped in a plpgsql function
 * called in one round trip, p50 10.8 ms (not kept: a second copy of this SQL in a migration for
 * little). Daemon end to end, see BENCHMARKS.md: with the lock transaction and two cycles
 * overlapped, 28–46% of raw undici at zero latency; as one autocommit statement, up to three at once
 * per daemon: see BENCHMARKS.md (daemon throughput).
 *
 * $1 daemon, $2…$14 as complete.ts, $15 text[] models, $16 int[] wants, $17 int[] held, $18 lease ms.
 * Rows come back tagged: kind 'claimed' (to send) or 'stale' (writes refused by their guard: the
 * row moved on). Returning the stale ids rather than every applied write saves decoding a row per
 * write in the daemon, whose event loop also drives the HTTP side.
 */
export function completeAndClaimSql(s: string): string {
  return `
WITH done AS (${completeUpdateSql(s)}
  RETURNING r.id
),
${claimCtes(s, { models: '$15', wants: '$16', held: '$17', daemon: '$1' })},
claimed AS (
${claimUpdate(s, { daemon: '$1', lease: '$18' })}
)
SELECT 'claimed' AS kind, c.id, c.batch_id, c.model, c.attempt, c.expires_at, c.custom_id, c.endpoint, c.method,
       c.path, c.body, c.api_key
  FROM claimed c
UNION ALL
SELECT 'stale', u.id, NULL, NULL, NULL::int, NULL::timestamptz, NULL, NULL, NULL, NULL, NULL, NULL
  FROM unnest($2::uuid[]) AS u(id)
 WHERE u.id NOT IN (SELECT d.id FROM done d)`;
}
