/**
 * A continuously refilled token bucket as a pure function of time: how providers enforce a
 * per-minute limit (as providers document it: it refills every millisecond, so a burst can be refused though the
 * minute's total is under the limit). The same arithmetic runs in the mock upstream (what it
 * admits), in the rate-budget SQL (src/db/sql/queue/rate-budget.ts, the database's copy of a model's
 * bucket) and in tests. Equivalent to GCRA with theoretical arrival time `at + (capacity − level) /
 * rate`; the level form is kept because it is what the headers report (remaining).
 *
 * Levels may go negative: a debt (a request cost more than estimated, or the upstream reported less
 * left than we thought) that refill pays back before anything more is admitted.
 */

export interface Bucket {
  /** Tokens in the bucket at `at`. */
  level: number;
  /** Epoch ms of `level`. */
  at: number;
}

export interface BucketLimit {
  /** Refill per minute (the RPM or TPM limit). */
  perMinute: number;
  /** Most the bucket holds (the largest burst); the per-minute limit for OpenAI-style limits. */
  capacity: number;
}

/** A full bucket at `now`. */
export function fullBucket(limit: BucketLimit, now: number): Bucket {
  return { level: limit.capacity, at: now };
}

/** The bucket at `now`: refilled for the time since `b.at`, never above capacity. */
export function refill(b: Bucket, limit: BucketLimit, now: number): Bucket {
  if (now <= b.at) return b;
  const level = Math.min(limit.capacity, b.level + ((now - b.at) * limit.perMinute) / 60_000);
  return { level: Math.max(level, b.level), at: now };
}

/**
 * Admits `cost` if the bucket holds it at `now` (the bucket after taking it), else refuses and says
 * how long until it would hold it (Infinity when the cost exceeds the capacity, or nothing refills).
 */
export function take(
  b: Bucket,
  cost: number,
  limit: BucketLimit,
  now: number,
): { ok: true; bucket: Bucket } | { ok: false; bucket: Bucket; waitMs: number } {
  const r = refill(b, limit, now);
  if (r.level >= cost) return { ok: true, bucket: { level: r.level - cost, at: now } };
  return { ok: false, bucket: r, waitMs: waitMs(r, cost, limit, now) };
}

/** Milliseconds from `now` until the bucket holds `cost` (0 if it does already). */
export function waitMs(b: Bucket, cost: number, limit: BucketLimit, now: number): number {
  const r = refill(b, limit, now);
  if (r.level >= cost) return 0;
  if (cost > limit.capacity || limit.perMinute <= 0) return Number.POSITIVE_INFINITY;
  return Math.ceil(((cost - r.level) * 60_000) / limit.perMinute);
}

/** Milliseconds until the bucket is full again (what OpenAI's x-ratelimit-reset-* reports). */
export function resetMs(b: Bucket, limit: BucketLimit, now: number): number {
  const r = refill(b, limit, now);
  if (limit.perMinute <= 0) return r.level >= limit.capacity ? 0 : Number.POSITIVE_INFINITY;
  return Math.max(0, Math.ceil(((limit.capacity - r.level) * 60_000) / limit.perMinute));
}
