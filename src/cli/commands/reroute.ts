import { UsageError } from '../../config/usage-error.js';
import { createUpstreamRouter } from '../../dispatch/upstream-routing.js';
import { NotFoundError, ValidationError } from '../../domain/errors.js';
import { PostgresRequestManager } from '../../manager/request-manager.js';
import { batchId as apiBatchId, parseBatchId } from '../../server/ids.js';
import { openDatabase } from '../database.js';
import type { CommandContext } from '../main.js';
import { routeLines } from '../route-lines.js';
import { resolveUpstream } from '../upstream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * `fusillade reroute BATCH --upstream URL [--upstream-api-key KEY | --config FILE]`: moves the
 * batch's requests that can still be sent (pending, in flight, failed) to the routes this command's
 * routing gives, as if the batch were created now (manager.rerouteBatch). Requests in flight finish
 * where they were sent; a retry of theirs goes to the new route. The daemons that can send the new
 * route pick the requests up; the batch's routes are printed afterwards (a key's fingerprint at most).
 * An operator's command on the database: any owner's batch.
 */
export async function rerouteCommand({ settings }: CommandContext, batch: string): Promise<number> {
  const id = parseBatchId(batch) ?? (UUID.test(batch) ? batch.toLowerCase() : null);
  if (!id) throw new UsageError(`${JSON.stringify(batch)} is not a batch id (batch_… or a UUID)`);
  if (!settings.routing.upstream && !settings.routing.models) {
    throw new UsageError('say where to move it: --upstream URL, or models in --config');
  }
  const upstream = await resolveUpstream(settings);
  const db = await openDatabase(settings, { poolSize: 2, log: (m) => console.error(m) }).catch(
    async (err) => {
      await upstream.close();
      throw err;
    },
  );
  try {
    const manager = new PostgresRequestManager(db.pool, { schema: db.schema });
    const router = createUpstreamRouter(upstream.routing);
    const moved = await manager.rerouteBatch(id, { router, requireRoutes: true }).catch((err) => {
      if (err instanceof NotFoundError) throw new UsageError(`no batch ${batch}`);
      if (err instanceof ValidationError) throw new UsageError(`${batch}: ${err.message}`);
      throw err;
    });
    console.log(`moved ${moved} request${moved === 1 ? '' : 's'} of ${apiBatchId(id)}`);
    for (const line of routeLines(await manager.getBatchUpstreams(id))) console.log(line);
    return 0;
  } finally {
    await db.close();
    await upstream.close();
  }
}
