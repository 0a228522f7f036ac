import { randomBytes } from 'node:crypto';

/**
 * Telling a dead daemon from a live one whose session blinked (src/db/sql/queue/liveness.ts states the
 * protocol). Pure: it sees the probes' results and a clock, and answers which daemons to declare
 * lost.
 */

/** How often each daemon probes the others' liveness locks. */
export const LIVENESS_PROBE_MS = 500;
/**
 * How long a lock must stay free, with no heartbeat since it was first found free, before its daemon
 * is declared lost. A live daemon that loses its session heartbeats at once and every
 * LOCKLESS_HEARTBEAT_MS, so it shows life well within this.
 */
export const LIVENESS_GRACE_MS = 1000;
/** Heartbeat interval of a daemon that does not hold its liveness lock (at most heartbeatIntervalMs). */
export const LOCKLESS_HEARTBEAT_MS = 250;

/** A random key for pg_advisory_lock(bigint), as the decimal text node-pg sends. */
export function newLivenessKey(): string {
  return randomBytes(8).readBigInt64BE().toString();
}

/** A daemon whose liveness lock a probe found free. */
export interface FreeLock {
  id: string;
  heartbeat_at: Date;
  /** The database's clock at the probe. */
  now: Date;
}

export interface LostDaemon {
  id: string;
  /** The database time of the first probe that found its lock free. */
  since: Date;
}

export class LostDaemonTracker {
  /** First sighting of each free lock: the database time, and this process's clock. */
  private readonly suspects = new Map<string, { since: Date; seenAt: number }>();

  constructor(private readonly graceMs: number = LIVENESS_GRACE_MS) {}

  /**
   * Takes one probe's free locks (seen at `at`, this process's ms clock) and returns the daemons to
   * declare lost: free at a probe at least graceMs after the first sighting, with no heartbeat since.
   * A daemon missing from a probe holds its lock again (or stopped) and is forgotten; one that
   * heartbeat since its first sighting is alive, and its watch starts over.
   */
  observe(free: FreeLock[], at: number): LostDaemon[] {
    const seen = new Set<string>();
    const lost: LostDaemon[] = [];
    for (const f of free) {
      seen.add(f.id);
      const s = this.suspects.get(f.id);
      if (!s || f.heartbeat_at.getTime() >= s.since.getTime()) {
        this.suspects.set(f.id, { since: f.now, seenAt: at });
      } else if (at - s.seenAt >= this.graceMs) {
        lost.push({ id: f.id, since: s.since });
      }
    }
    for (const id of this.suspects.keys()) if (!seen.has(id)) this.suspects.delete(id);
    return lost;
  }

  /** Forgets daemons once they were declared lost (or found alive by the declaration). */
  forget(ids: Iterable<string>): void {
    for (const id of ids) this.suspects.delete(id);
  }

  get size(): number {
    return this.suspects.size;
  }
}
