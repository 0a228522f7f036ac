import { NotFoundError } from '../../domain/errors.js';
import type { WebhookEndpointInfo } from '../../webhooks/endpoints.js';
import type { ApiContext, Call } from '../context.js';
import type { CreatedWebhookEndpoint, WebhookDelivery, WebhookEndpoint } from '../dashboard-wire.js';
import { ApiError, readJsonBody, sendJson } from '../http.js';
import { batchId } from '../ids.js';
import type { Router } from '../router.js';
import { intParam } from './params.js';

/**
 * The owner's webhook receivers, for the dashboard, on the API's router (same Bearer keys and owner
 * scoping; another owner's endpoint reads as 404):
 *
 *   GET    /api/dashboard/webhooks                 the owner's endpoints (never their secrets)
 *   POST   /api/dashboard/webhooks {url, events?}  adds one; the answer carries its secret, once
 *   GET    /api/dashboard/webhooks/deliveries      the latest deliveries (?endpoint=we_…&limit=…)
 *   DELETE /api/dashboard/webhooks/:id             removes one (its pending deliveries end failed)
 *   POST   /api/dashboard/webhooks/:id/enable      enables a disabled one again
 *
 * Private and loopback receiver URLs are refused unless the server runs with
 * --allow-private-webhooks (the manager's webhooks.allowPrivate).
 */
export function addWebhookRoutes(router: Router): Router {
  return router
    .add('GET', '/api/dashboard/webhooks', list)
    .add('POST', '/api/dashboard/webhooks', add)
    .add('GET', '/api/dashboard/webhooks/deliveries', deliveries)
    .add('DELETE', '/api/dashboard/webhooks/:id', remove)
    .add('POST', '/api/dashboard/webhooks/:id/enable', enable);
}

const seconds = (d: Date | null) => (d === null ? null : Math.floor(d.getTime() / 1000));

function endpointJson(e: WebhookEndpointInfo): WebhookEndpoint {
  return {
    id: e.id,
    object: 'webhook_endpoint',
    url: e.url,
    events: e.events,
    status: e.status,
    failures: e.failures,
    last_success_at: seconds(e.lastSuccessAt),
    last_failure_at: seconds(e.lastFailureAt),
    last_error: e.lastError,
    disabled_at: seconds(e.disabledAt),
    created_at: seconds(e.createdAt)!,
  };
}

function notFound(id: string) {
  return (err: unknown): never => {
    if (err instanceof NotFoundError) {
      throw new ApiError(404, `No such webhook endpoint: ${id}`, { code: 'not_found', param: 'id' });
    }
    throw err;
  };
}

async function list(ctx: ApiContext, call: Call): Promise<void> {
  const data = (await ctx.db(ctx.manager.webhookEndpoints.list({ owner: call.owner }))).map(endpointJson);
  sendJson(call.res, 200, { object: 'list', data });
}

async function add(ctx: ApiContext, call: Call): Promise<void> {
  const body = await readJsonBody(call.req, 64 * 1024);
  const input =
    body !== null && typeof body === 'object' && !Array.isArray(body)
      ? (body as Record<string, unknown>)
      : {};
  const { events } = input;
  if (events !== undefined && typeof events !== 'string' && !Array.isArray(events)) {
    throw new ApiError(400, 'events must be a list of event names.', {
      code: 'invalid_events',
      param: 'events',
    });
  }
  const created = await ctx.db(
    ctx.manager.webhookEndpoints.add({
      owner: call.owner,
      url: typeof input.url === 'string' ? input.url : '',
      ...(events !== undefined ? { events: events as string | string[] } : {}),
      allowPrivate: ctx.manager.webhooks.allowPrivate ?? false,
    }),
  );
  ctx.log({
    msg: 'webhook endpoint added',
    requestId: call.requestId,
    owner: call.owner,
    endpoint: created.id,
  });
  sendJson(call.res, 200, {
    ...endpointJson(created),
    secret: created.secret,
  } satisfies CreatedWebhookEndpoint);
}

async function deliveries(ctx: ApiContext, call: Call): Promise<void> {
  const endpoint = call.query.get('endpoint');
  const limit = intParam(call.query, 'limit', { min: 1, max: 1000, fallback: 50 });
  const rows = await ctx
    .db(
      ctx.manager.webhookEndpoints.deliveries({
        owner: call.owner,
        ...(endpoint ? { endpointId: endpoint } : {}),
        limit,
      }),
    )
    .catch(notFound(endpoint ?? ''));
  const data: WebhookDelivery[] = rows.map((d) => ({
    event_id: d.eventId,
    type: d.eventType,
    batch_id: batchId(d.batchId),
    endpoint_id: d.endpointId,
    state: d.state,
    attempts: d.attempts,
    next_attempt_at: seconds(d.nextAttemptAt),
    last_status: d.lastStatus,
    last_error: d.lastError,
    delivered_at: seconds(d.deliveredAt),
    created_at: seconds(d.createdAt)!,
  }));
  sendJson(call.res, 200, { object: 'list', data });
}

async function remove(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const removed = await ctx.db(ctx.manager.webhookEndpoints.remove(id, call.owner)).catch(notFound(id));
  ctx.log({
    msg: 'webhook endpoint removed',
    requestId: call.requestId,
    owner: call.owner,
    endpoint: removed.id,
  });
  sendJson(call.res, 200, { id: removed.id, object: 'webhook_endpoint', deleted: true });
}

async function enable(ctx: ApiContext, call: Call): Promise<void> {
  const id = call.params[0]!;
  const enabled = await ctx.db(ctx.manager.webhookEndpoints.enable(id, call.owner)).catch(notFound(id));
  sendJson(call.res, 200, endpointJson(enabled));
}
