import type pg from 'pg';
import { NotFoundError, ValidationError } from '../domain/errors.js';
import { isWebhookEventType, WEBHOOK_EVENT_TYPES, type WebhookEventType } from '../domain/webhooks.js';
import { isUuid } from '../store/rows.js';
import { checkWebhookUrl } from './address.js';
import { newWebhookSecret } from './signing.js';

/**
 * An owner's webhook endpoints (webhook_endpoints) and their deliveries, for the CLI and the
 * dashboard. Ids are shown as `we_<32 hex>`; every operation takes that form or the UUID, and an
 * owner scope makes others' endpoints read as not found.
 */

export interface WebhookEndpointInfo {
  /** `we_<32 hex>` */
  id: string;
  owner: string;
  url: string;
  events: WebhookEventType[];
  /** disabled: it kept failing (or was disabled), and receives nothing until enabled. */
  status: 'active' | 'disabled';
  /** Consecutive failed attempts since the last success. */
  failures: number;
  lastSuccessAt: Date | null;
  lastFailureAt: Date | null;
  lastError: string | null;
  disabledAt: Date | null;
  createdAt: Date;
}

export interface CreatedWebhookEndpoint extends WebhookEndpointInfo {
  /** The signing secret (`whsec_…`): returned here once, never listed. */
  secret: string;
}

export interface WebhookDeliveryInfo {
  eventId: string;
  eventType: WebhookEventType;
  /** The batch's store id (UUID). */
  batchId: string;
  endpointId: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  nextAttemptAt: Date | null;
  lastStatus: number | null;
  lastError: string | null;
  deliveredAt: Date | null;
  createdAt: Date;
}

interface EndpointRow {
  id: string;
  owner: string;
  url: string;
  events: string[];
  failures: number;
  last_success_at: Date | null;
  last_failure_at: Date | null;
  last_error: string | null;
  disabled_at: Date | null;
  created_at: Date;
}

const COLUMNS =
  'id, owner, url, events, failures, last_success_at, last_failure_at, last_error, disabled_at, created_at';

export const webhookEndpointId = (uuid: string): string => `we_${uuid.replace(/-/g, '')}`;

/** The UUID of `we_<32 hex>` or of a UUID, else null. */
export function parseWebhookEndpointId(id: string): string | null {
  if (isUuid(id)) return id.toLowerCase();
  const m = /^we_([0-9a-f]{32})$/i.exec(id);
  if (!m) return null;
  const h = m[1]!.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function toInfo(r: EndpointRow): WebhookEndpointInfo {
  return {
    id: webhookEndpointId(r.id),
    owner: r.owner,
    url: r.url,
    events: r.events as WebhookEventType[],
    status: r.disabled_at ? 'disabled' : 'active',
    failures: r.failures,
    lastSuccessAt: r.last_success_at,
    lastFailureAt: r.last_failure_at,
    lastError: r.last_error,
    disabledAt: r.disabled_at,
    createdAt: r.created_at,
  };
}

function invalid(code: string, param: string, message: string): ValidationError {
  return new ValidationError([{ code, param, message }]);
}

/** Parses `batch.completed,batch.failed` (or a list); all four events when absent. */
export function parseWebhookEvents(value: string | readonly string[] | undefined): WebhookEventType[] {
  if (value === undefined) return [...WEBHOOK_EVENT_TYPES];
  const list = (typeof value === 'string' ? value.split(',') : [...value])
    .map((e) => e.trim())
    .filter(Boolean);
  if (list.length === 0) throw invalid('invalid_events', 'events', 'events must name at least one event');
  for (const e of list) {
    if (!isWebhookEventType(e)) {
      throw invalid(
        'invalid_events',
        'events',
        `unknown event ${JSON.stringify(e)} (known: ${WEBHOOK_EVENT_TYPES.join(', ')})`,
      );
    }
  }
  return [...new Set(list)] as WebhookEventType[];
}

export interface AddWebhookEndpointOptions {
  owner: string;
  url: string;
  /** Default: every batch event. */
  events?: string | readonly string[];
  /** Accept a URL whose host is a private or loopback address (`--allow-private-webhooks`). */
  allowPrivate?: boolean;
}

export async function addWebhookEndpoint(
  pool: pg.Pool,
  s: string,
  options: AddWebhookEndpointOptions,
): Promise<CreatedWebhookEndpoint> {
  const owner = typeof options.owner === 'string' ? options.owner.trim() : '';
  if (owner === '' || owner.length > 200) {
    throw invalid('invalid_owner', 'owner', 'owner must be a non-empty name (≤ 200 characters)');
  }
  let url: string;
  try {
    url = checkWebhookUrl(String(options.url ?? ''), options.allowPrivate ?? false);
  } catch (err) {
    throw invalid('invalid_url', 'url', (err as Error).message);
  }
  const events = parseWebhookEvents(options.events);
  const secret = newWebhookSecret();
  const { rows } = await pool.query<EndpointRow>(
    `INSERT INTO ${s}.webhook_endpoints (owner, url, events, secret) VALUES ($1, $2, $3, $4) RETURNING ${COLUMNS}`,
    [owner, url, events, secret],
  );
  return { ...toInfo(rows[0]!), secret };
}

export async function listWebhookEndpoints(
  pool: pg.Pool,
  s: string,
  options: { owner?: string | null } = {},
): Promise<WebhookEndpointInfo[]> {
  const { rows } = await pool.query<EndpointRow>(
    `SELECT ${COLUMNS} FROM ${s}.webhook_endpoints
      WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1)
      ORDER BY created_at, id`,
    [options.owner ?? null],
  );
  return rows.map(toInfo);
}

function endpointUuid(id: string): string {
  const uuid = parseWebhookEndpointId(id);
  if (!uuid) throw new NotFoundError('webhook_endpoint', id);
  return uuid;
}

/**
 * Removes an endpoint: it receives nothing more, and its pending deliveries end failed. The row
 * stays (soft delete) for the deliveries' history.
 */
export async function removeWebhookEndpoint(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
): Promise<WebhookEndpointInfo> {
  const uuid = endpointUuid(id);
  const { rows } = await pool.query<EndpointRow>(
    `WITH gone AS (
       UPDATE ${s}.webhook_endpoints SET deleted_at = now()
        WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)
        RETURNING ${COLUMNS}
     ),
     dropped AS (
       UPDATE ${s}.webhook_deliveries d SET state = 'failed', lease_token = NULL, last_error = 'endpoint removed'
         FROM gone WHERE d.endpoint_id = gone.id AND d.state = 'pending'
     )
     SELECT * FROM gone`,
    [uuid, owner ?? null],
  );
  if (!rows[0]) throw new NotFoundError('webhook_endpoint', id);
  return toInfo(rows[0]);
}

/** Enables a disabled endpoint again, with its failure count reset (events from now on). */
export async function enableWebhookEndpoint(
  pool: pg.Pool,
  s: string,
  id: string,
  owner?: string | null,
): Promise<WebhookEndpointInfo> {
  const uuid = endpointUuid(id);
  const { rows } = await pool.query<EndpointRow>(
    `UPDATE ${s}.webhook_endpoints SET disabled_at = NULL, failures = 0, failing_since = NULL
      WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)
      RETURNING ${COLUMNS}`,
    [uuid, owner ?? null],
  );
  if (!rows[0]) throw new NotFoundError('webhook_endpoint', id);
  return toInfo(rows[0]);
}

/** An owner's most recent deliveries, newest first (optionally of one endpoint). */
export async function listWebhookDeliveries(
  pool: pg.Pool,
  s: string,
  options: { owner?: string | null; endpointId?: string; limit?: number } = {},
): Promise<WebhookDeliveryInfo[]> {
  const endpoint = options.endpointId === undefined ? null : endpointUuid(options.endpointId);
  const { rows } = await pool.query(
    `SELECT d.event_id, d.event_type, d.batch_id, d.endpoint_id, d.state, d.attempts, d.next_attempt_at,
            d.last_status, d.last_error, d.delivered_at, d.created_at
       FROM ${s}.webhook_deliveries d JOIN ${s}.webhook_endpoints e ON e.id = d.endpoint_id
      WHERE ($1::text IS NULL OR e.owner = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2)
      ORDER BY d.created_at DESC, d.id DESC
      LIMIT $3`,
    [options.owner ?? null, endpoint, Math.min(Math.max(options.limit ?? 50, 1), 1000)],
  );
  return rows.map((r) => ({
    eventId: r.event_id,
    eventType: r.event_type,
    batchId: r.batch_id,
    endpointId: webhookEndpointId(r.endpoint_id),
    state: r.state,
    attempts: r.attempts,
    nextAttemptAt: r.state === 'pending' ? r.next_attempt_at : null,
    lastStatus: r.last_status,
    lastError: r.last_error,
    deliveredAt: r.delivered_at,
    createdAt: r.created_at,
  }));
}

/** The webhook receivers of one database (a pool and a quoted schema); the API and `fusillade webhooks` use it. */
export class WebhookEndpoints {
  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
  ) {}

  /** A new receiver; its signing secret is in the answer only. */
  add(options: AddWebhookEndpointOptions): Promise<CreatedWebhookEndpoint> {
    return addWebhookEndpoint(this.pool, this.schema, options);
  }

  list(options: { owner?: string | null } = {}): Promise<WebhookEndpointInfo[]> {
    return listWebhookEndpoints(this.pool, this.schema, options);
  }

  /** Removes a receiver (of `owner` when given); NotFoundError otherwise. */
  remove(id: string, owner?: string | null): Promise<WebhookEndpointInfo> {
    return removeWebhookEndpoint(this.pool, this.schema, id, owner);
  }

  /** Enables a disabled receiver again and forgets its failures. */
  enable(id: string, owner?: string | null): Promise<WebhookEndpointInfo> {
    return enableWebhookEndpoint(this.pool, this.schema, id, owner);
  }

  /** The latest deliveries of the owner's receivers, newest first. */
  deliveries(
    options: { owner?: string | null; endpointId?: string; limit?: number } = {},
  ): Promise<WebhookDeliveryInfo[]> {
    return listWebhookDeliveries(this.pool, this.schema, options);
  }
}
