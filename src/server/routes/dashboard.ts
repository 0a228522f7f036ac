import { InvalidStateError, NotFoundError } from '../../domain/errors.js';
import { REQUEST_STATES } from '../../domain/request-state.js';
import { MAX_OFFSET, REQUEST_SORTS } from '../../store/reads/dashboard/requests.js';
import { isBatchStatus } from '../../store/reads/dashboard/scope.js';
import type { ApiContext, Call } from '../context.js';
import type { Me, RetryAnswer, RetryBody } from '../dashboard-wire.js';
import { ApiError, readJsonBody, sendJson } from '../http.js';
import { batchId as apiBatchId, parseBatchId } from '../ids.js';
import type { Router } from '../router.js';
import { noSuchBatch } from './batches.js';
import * as json from './dashboard-json.js';
import { enumParam, intParam, optionalIntParam } from './params.js';

/**
 * The dashboard's JSON beyond /v1, on the API's router: the same Bearer keys, owner scoping (other
 * owners' batches are 404), database deadline, error envelope and per-route metrics. The answers'
 * types are in dashboard-wire.ts.
 */
export function addDashboardRoutes(router: Router): Router {
  return router
    .add('GET', '/api/dashboard/me', me)
    .add('GET', '/api/dashboard/batches', listBatches)
    .add('GET', '/api/dashboard/batches/:id/progress', progress)
    .add('GET', '/api/dashboard/batches/:id/requests', listRequests)
    .add('GET', '/api/dashboard/batches/:id/requests/:request_id', requestDetail)
    .add('GET', '/api/dashboard/batches/:id/failures', failures)
    .add('POST', '/api/dashboard/batches/:id/retry', retry)
    .add('GET', '/api/dashboard/operations', operationsPage);
}

async function me(_ctx: ApiContext, call: Call): Promise<void> {
  sendJson(call.res, 200, { owner: call.owner } satisfies Me);
}

/** The batch's UUID from the path, and the 404 for it; an id that does not decode cannot exist. */
function batchOf(call: Call): { uuid: string; notFound: (err: unknown) => never } {
  const id = call.params[0]!;
  const uuid = parseBatchId(id);
  if (!uuid) throw noSuchBatch(id);
  return {
    uuid,
    notFound(err) {
      if (err instanceof NotFoundError && err.kind === 'batch') throw noSuchBatch(id);
      if (err instanceof NotFoundError && err.kind === 'request') {
        throw new ApiError(404, `No such request: ${err.id}`, { code: 'not_found', param: 'request_id' });
      }
      throw err;
    },
  };
}

async function listBatches(ctx: ApiContext, call: Call): Promise<void> {
  const q = call.query;
  const status = q.get('status') || undefined;
  if (status !== undefined && !isBatchStatus(status)) {
    throw new ApiError(400, `Unknown status ${JSON.stringify(status)}.`, {
      code: 'invalid_status',
      param: 'status',
    });
  }
  const after = q.get('after');
  const before = q.get('before');
  // An id that does not decode matches nothing: its page is empty rather than the first one.
  const cursor = (id: string | null) => (id ? (parseBatchId(id) ?? '') : undefined);
  const page = await ctx.db(
    ctx.manager.dashboardReads.listBatches({
      owner: call.owner,
      status,
      search: q.get('q') ?? undefined,
      after: cursor(after),
      before: cursor(before),
      limit: intParam(q, 'limit', { min: 1, max: 100, fallback: 20 }),
    }),
  );
  const upstreams = await ctx.db(ctx.manager.dashboardReads.upstreams(page.data.map((o) => o.batch.id)));
  sendJson(call.res, 200, json.batchList(page, ctx.prices, upstreams));
}

async function progress(ctx: ApiContext, call: Call): Promise<void> {
  const batch = batchOf(call);
  const [p, upstreams] = await ctx
    .db(
      Promise.all([
        ctx.manager.dashboardReads.progress(batch.uuid, call.owner),
        ctx.manager.getBatchUpstreams(batch.uuid, { owner: call.owner }),
      ]),
    )
    .catch(batch.notFound);
  sendJson(call.res, 200, json.batchProgress(p, ctx.prices, upstreams));
}

async function listRequests(ctx: ApiContext, call: Call): Promise<void> {
  const batch = batchOf(call);
  const q = call.query;
  const lines = { min: 0, max: 2_147_483_647 };
  const page = await ctx
    .db(
      ctx.manager.dashboardReads.requests(batch.uuid, {
        owner: call.owner,
        state: enumParam(q, 'state', REQUEST_STATES),
        code: q.get('code') || undefined,
        search: q.get('q') || undefined,
        sort: enumParam(q, 'sort', REQUEST_SORTS),
        order: enumParam(q, 'order', ['asc', 'desc'] as const),
        fromLine: optionalIntParam(q, 'from_line', lines),
        beforeLine: optionalIntParam(q, 'before_line', lines),
        afterLine: optionalIntParam(q, 'after_line', lines),
        offset: optionalIntParam(q, 'offset', { min: 0, max: MAX_OFFSET }),
        limit: intParam(q, 'limit', { min: 1, max: 500, fallback: 50 }),
      }),
    )
    .catch(batch.notFound);
  sendJson(call.res, 200, json.requestPage(page));
}

async function requestDetail(ctx: ApiContext, call: Call): Promise<void> {
  const batch = batchOf(call);
  const d = await ctx
    .db(ctx.manager.dashboardReads.requestDetail(batch.uuid, call.params[1]!, call.owner))
    .catch(batch.notFound);
  sendJson(call.res, 200, json.requestDetail(d));
}

async function failures(ctx: ApiContext, call: Call): Promise<void> {
  const batch = batchOf(call);
  const f = await ctx.db(ctx.manager.dashboardReads.failures(batch.uuid, call.owner)).catch(batch.notFound);
  sendJson(call.res, 200, json.failureSummary(f));
}

/**
 * Requeues failed requests: all, or `only: "retriable"`. A batch that has ended is reopened only
 * with `reopen: true` (a deliberate act: its results change); otherwise 409 `reopen_required`.
 */
async function retry(ctx: ApiContext, call: Call): Promise<void> {
  const batch = batchOf(call);
  const body = (await readJsonBody(call.req, ctx.maxJsonBytes)) as RetryBody | null;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError(400, 'The body must be a JSON object.', { code: 'invalid_body' });
  }
  if (body.only !== undefined && body.only !== 'all' && body.only !== 'retriable') {
    throw new ApiError(400, 'only must be "all" or "retriable".', { code: 'invalid_only', param: 'only' });
  }
  if (body.reopen !== undefined && typeof body.reopen !== 'boolean') {
    throw new ApiError(400, 'reopen must be a boolean.', { code: 'invalid_reopen', param: 'reopen' });
  }
  const { manager } = ctx;
  const before = await ctx.db(manager.getBatch(batch.uuid, { owner: call.owner })).catch(batch.notFound);
  // No deadline on the write itself: answering 503 while it may still commit would invite a second retry.
  const retried = await manager
    .retryFailedRequests(batch.uuid, {
      owner: call.owner,
      only: body.only ?? 'all',
      reopen: body.reopen ?? false,
    })
    .catch((err) => {
      if (err instanceof InvalidStateError && err.reason === 'batch_ended') {
        throw new ApiError(409, `${err.message}.`, { code: 'reopen_required', param: 'reopen' });
      }
      return batch.notFound(err);
    });
  ctx.log({
    msg: 'requests retried',
    requestId: call.requestId,
    owner: call.owner,
    batch: apiBatchId(batch.uuid),
    retried,
  });
  sendJson(call.res, 200, {
    id: apiBatchId(batch.uuid),
    retried,
    reopened: retried > 0 && before.finishedAt !== null,
  } satisfies RetryAnswer);
}

async function operationsPage(ctx: ApiContext, call: Call): Promise<void> {
  const ops = await ctx.db(ctx.manager.dashboardReads.operations(call.owner));
  sendJson(call.res, 200, json.operations(ops));
}
