/**
 * Webhooks, the pure parts: the events (OpenAI's batch events), the delivery lifecycle and its
 * retry schedule, and when a failing endpoint is disabled.
 *
 * A delivery (one event for one endpoint, a row of webhook_deliveries):
 *
 *   pending ──2xx──────────────────────────────▶ delivered
 *      │  ▲
 *      │  └─ attempt failed, attempts left: due again after RETRY_SCHEDULE_MS[attempts - 1]
 *      └──── attempt failed, none left; or its endpoint disabled or removed ──▶ failed
 *
 * An attempt is claimed with a lease (next_attempt_at pushed past it): a deliverer that dies
 * mid-attempt leaves the row due again once the lease has passed, so an event is delivered at least
 * once, and, barring such a death between the receiver's answer and its recording, exactly once.
 */

export const WEBHOOK_EVENT_TYPES = [
  'batch.completed',
  'batch.failed',
  'batch.expired',
  'batch.cancelled',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export function isWebhookEventType(value: unknown): value is WebhookEventType {
  return typeof value === 'string' && (WEBHOOK_EVENT_TYPES as readonly string[]).includes(value);
}

/** The event body, as OpenAI sends it: `{"object":"event","id":"evt_…","type":…,"created_at":…,"data":{"id":"batch_…"}}`. */
export interface WebhookEvent {
  object: 'event';
  id: string;
  type: WebhookEventType;
  /** Unix seconds: when the batch ended. */
  created_at: number;
  data: { id: string };
}

/**
 * Delays before the second, third, … attempt of a delivery (the first goes at once): the first
 * retry within seconds, then growing, about a day in all (23 h 35 min; 8 attempts). Each delay gets
 * up to +10 % of jitter, so a receiver that comes back is not hit by every retry at once.
 */
export const RETRY_SCHEDULE_MS: readonly number[] = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  5 * 3_600_000,
  8 * 3_600_000,
  8 * 3_600_000,
];

/**
 * When to try a delivery again after its attempt number `attempts` (1-based) failed, in ms from
 * now, or null when it has had every attempt.
 */
export function retryDelay(
  attempts: number,
  schedule: readonly number[] = RETRY_SCHEDULE_MS,
  random: () => number = Math.random,
): number | null {
  const base = schedule[attempts - 1];
  if (base === undefined) return null;
  return Math.round(base * (1 + 0.1 * random()));
}

export interface DisablePolicy {
  /** Consecutive failed attempts (any of the endpoint's deliveries) before it is disabled. */
  failures: number;
  /** …and the failing streak must have lasted at least this long (a short outage never disables). */
  minStreakMs: number;
}

/** About ten consecutive failures over at least an hour. */
export const DEFAULT_DISABLE_POLICY: DisablePolicy = { failures: 10, minStreakMs: 3_600_000 };
