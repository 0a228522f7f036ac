import type pg from 'pg';
import { ensureRoutes } from '../../db/routes.js';
import { batchUpstreamsSql, waitingBatchesSql } from '../../db/sql/batches/upstreams.js';
import { withTransaction } from '../../db/transaction.js';
import { NotFoundError, ValidationError } from '../../domain/errors.js';
import type { BatchUpstream } from '../../domain/types.js';
import {
  credentialFingerprint,
  displayUpstream,
  type ModelRouter,
  type RouteSpec,
  routeOfTemplate,
} from '../../domain/upstream-route.js';
import { assertId } from '../rows.js';
import type { BatchEvents } from './batches.js';

/**
 * A route depends on a template's model, its endpoint and its key (none, plain, or sealed by which
 * key-encryption key: KEY_KIND), so a file's distinct combinations are read (one pass over its
 * templates), routed once each, and joined back to the requests while inserting or re-pointing them.
 */
interface RoutedCombos {
  models: string[];
  endpoints: string[];
  keyed: string[];
  routeIds: number[];
}

/** A template's key as the route sees it: '' (none), 'plain', or 'sealed:<kid>' (src/domain/key-encryption.ts). */
const KEY_KIND = (t: string) => `CASE WHEN ${t}.api_key = '' THEN ''
  WHEN ${t}.api_key LIKE 'fk1.%' THEN 'sealed:' || split_part(${t}.api_key, '.', 2) ELSE 'plain' END`;

async function routeCombos(
  client: pg.ClientBase,
  s: string,
  fileId: string,
  router: ModelRouter | null,
  requireRoutes: boolean,
): Promise<RoutedCombos> {
  const { rows: combos } = await client.query<{ model: string; endpoint: string; keyed: string }>(
    `SELECT DISTINCT t.model, t.endpoint, ${KEY_KIND('t')} AS keyed FROM ${s}.request_templates t WHERE t.file_id = $1`,
    [fileId],
  );
  const routedModels = new Map<string, ReturnType<ModelRouter['route']>>();
  const specs: RouteSpec[] = [];
  for (const c of combos) {
    if (!routedModels.has(c.model)) routedModels.set(c.model, router?.route(c.model));
    const routed = routedModels.get(c.model);
    if (requireRoutes && !routed?.endpoint) {
      throw new ValidationError([
        {
          code: 'unknown_model',
          param: 'input_file_id',
          message: `no upstream is configured for model ${JSON.stringify(c.model)}`,
        },
      ]);
    }
    specs.push(
      routeOfTemplate(routed?.endpoint ? routed : undefined, {
        endpoint: c.endpoint,
        hasKey: c.keyed !== '',
        sealedBy: c.keyed.startsWith('sealed:') ? c.keyed.slice('sealed:'.length) : null,
      }),
    );
  }
  const stored = await ensureRoutes(client, s, specs);
  const idOf = new Map(stored.map((r) => [`${r.upstream}\u0000${r.credential}`, r.id]));
  return {
    models: combos.map((c) => c.model),
    endpoints: combos.map((c) => c.endpoint),
    keyed: combos.map((c) => c.keyed),
    routeIds: specs.map((r) => idOf.get(`${r.upstream}\u0000${r.credential}`)!),
  };
}

/** The combinations as a relation m(model, endpoint, keyed, route_id), from parameters $n..$n+3. */
function combosRelation(first: number): string {
  const p = (i: number) => `$${first + i}`;
  return `unnest(${p(0)}::text[], ${p(1)}::text[], ${p(2)}::text[], ${p(3)}::int[]) AS m(model, endpoint, keyed, route_id)`;
}

function combosParams(c: RoutedCombos): unknown[] {
  return [c.models, c.endpoints, c.keyed, c.routeIds];
}

/**
 * Inserts a new batch's requests with their routes, and its batch_models and batch_routes rows, inside
 * the creating transaction. With `coalesce` (issue 15 item 4, docs/decisions/0008), each line whose
 * model, route, key, method, path and JSON body (canonical: compared as jsonb) equal an earlier
 * line's gets coalesced_into = that first line's request: it is never claimed, and gets its leader's
 * outcome when the leader's is written (src/db/sql/queue/complete.ts). Non-JSON bodies are not
 * coalesced. Without it the insert has no window and no jsonb parse: a batch that does not coalesce
 * pays nothing.
 */
export async function insertRoutedRequests(
  client: pg.ClientBase,
  s: string,
  batchId: string,
  fileId: string,
  router: ModelRouter | null,
  requireRoutes: boolean,
  coalesce = false,
): Promise<void> {
  const c = await routeCombos(client, s, fileId, router, requireRoutes);
  const from = `FROM ${s}.request_templates t
       JOIN ${combosRelation(3)} ON m.model = t.model AND m.endpoint = t.endpoint AND m.keyed = ${KEY_KIND('t')}
      WHERE t.file_id = $2`;
  const essence = "lower(trim(split_part(t.content_type, ';', 1)))";
  const insert = coalesce
    ? `,
     src AS MATERIALIZED (
       SELECT gen_random_uuid() AS id, t.id AS template_id, t.line_number, t.model, m.route_id, t.prefix_hash,
              t.api_key, t.method, t.path,
              CASE WHEN t.body <> '' AND (t.content_type IS NULL OR ${essence} = 'application/json'
                                          OR ${essence} LIKE '%+json')
                   THEN ${s}.coalesce_key(t.body) END AS k
         ${from}
     )
     INSERT INTO ${s}.requests (id, batch_id, template_id, line_number, model, route_id, prefix_hash, coalesced_into)
     SELECT id, $1, template_id, line_number, model, route_id, prefix_hash,
            CASE WHEN k IS NOT NULL THEN nullif(first_value(id) OVER (
              PARTITION BY model, route_id, api_key, method, path, k ORDER BY line_number), id) END
       FROM src`
    : `
     INSERT INTO ${s}.requests (batch_id, template_id, line_number, model, route_id, prefix_hash)
     SELECT $1, t.id, t.line_number, t.model, m.route_id, t.prefix_hash
       ${from}`;
  // One statement: the requests, the batch's models and its routes. Each request's batch_id is
  // checked once for the statement, not per row (migrations/0025_reference_checks.sql): for 20,000
  // requests the INSERT takes 160–180 ms of PostgreSQL CPU against 230–280 ms with the foreign
  // key's per-row check (3 alternating rounds of 3 at load 12, docs/decisions/store-phase.md).
  await client.query(
    `WITH models AS (
       INSERT INTO ${s}.batch_models (batch_id, model) SELECT DISTINCT $1::uuid, m FROM unnest($3::text[]) m
     ),
     routes AS (
       INSERT INTO ${s}.batch_routes (batch_id, model, route_id)
       SELECT DISTINCT $1::uuid, m, r FROM unnest($3::text[], $6::int[]) AS x(m, r)
     )${insert}`,
    [batchId, fileId, ...combosParams(c)],
  );
}

/**
 * Re-points the requests of a batch that can still be sent (pending, in flight, failed) to the routes
 * `router` gives now, as if the batch were created now; requests that ended keep the route they were
 * sent on. An in-flight request finishes where it was sent; if it comes back for a retry, the retry
 * goes to the new route. One transaction, holding the batch row; one notification so daemons look
 * for the moved work. Returns how many requests moved.
 */
export async function rerouteBatchRequests(
  client: pg.ClientBase,
  s: string,
  events: BatchEvents,
  batchId: string,
  fileId: string,
  router: ModelRouter | null,
  requireRoutes: boolean,
): Promise<number> {
  const c = await routeCombos(client, s, fileId, router, requireRoutes);
  const { rowCount } = await client.query(
    `UPDATE ${s}.requests r SET route_id = m.route_id
       FROM ${s}.request_templates t, ${combosRelation(3)}
      WHERE r.batch_id = $1 AND r.state IN ('pending', 'claimed', 'processing', 'failed')
        AND t.id = r.template_id AND t.file_id = $2
        AND m.model = t.model AND m.endpoint = t.endpoint AND m.keyed = ${KEY_KIND('t')}
        AND r.route_id IS DISTINCT FROM m.route_id`,
    [batchId, fileId, ...combosParams(c)],
  );
  await client.query(`DELETE FROM ${s}.batch_routes WHERE batch_id = $1`, [batchId]);
  await client.query(
    `INSERT INTO ${s}.batch_routes (batch_id, model, route_id)
     SELECT DISTINCT $1::uuid, m, r FROM unnest($2::text[], $3::int[]) AS x(m, r)`,
    [batchId, c.models, c.routeIds],
  );
  const moved = rowCount ?? 0;
  if (moved > 0) await events.notify(client, { type: 'batch_reopened', batchId });
  return moved;
}

/** rerouteBatchRequests in its own transaction, for a batch the owner can see (else NotFoundError). */
export async function rerouteBatch(
  pool: pg.Pool,
  s: string,
  events: BatchEvents,
  batchId: string,
  owner: string | null | undefined,
  router: ModelRouter | null,
  requireRoutes: boolean,
): Promise<number> {
  assertId('batch', batchId);
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<{ file_id: string }>(
      `SELECT file_id FROM ${s}.batches
        WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)
        FOR NO KEY UPDATE`,
      [batchId, owner ?? null],
    );
    if (!rows[0]) throw new NotFoundError('batch', batchId);
    return rerouteBatchRequests(client, s, events, batchId, rows[0].file_id, router, requireRoutes);
  });
}

/** Where each of these batches' requests go (BatchUpstream per route), keyed by batch id. */
export async function upstreamsOf(
  pool: pg.Pool,
  s: string,
  batchIds: string[],
  deadDaemonAfterMs: number,
): Promise<Map<string, BatchUpstream[]>> {
  const out = new Map<string, BatchUpstream[]>(batchIds.map((id) => [id, []]));
  if (batchIds.length === 0) return out;
  const { rows } = await pool.query<{
    batch_id: string;
    upstream: string;
    credential: string;
    models: string[];
    daemons: number;
    pending: boolean;
  }>(batchUpstreamsSql(s), [batchIds, deadDaemonAfterMs]);
  for (const r of rows) {
    const fingerprint = credentialFingerprint(r.credential);
    out.get(r.batch_id)?.push({
      upstream: displayUpstream(r.upstream),
      credential: fingerprint ? 'key' : r.credential,
      keyFingerprint: fingerprint,
      models: r.models,
      daemons: r.daemons,
      waiting: r.pending && r.daemons === 0,
    });
  }
  return out;
}

/** How many live batches have requests pending on an upstream no live daemon can send. */
export async function countWaitingBatches(
  pool: pg.Pool,
  s: string,
  deadDaemonAfterMs: number,
): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(waitingBatchesSql(s), [deadDaemonAfterMs]);
  return rows[0]?.n ?? 0;
}
