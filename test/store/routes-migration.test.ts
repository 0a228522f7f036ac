import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { createUpstreamRouter } from '../../src/dispatch/upstream-routing.js';
import { PostgresRequestManager } from '../../src/manager/request-manager.js';
import { startMockUpstream } from '../../src/mock-upstream/server.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { waitForBatchEnd } from '../support/mock-upstream.js';

/**
 * A database from before routes were recorded (migrations up to 0009) upgrades: the requests that can
 * still be sent get the route their template implies (0010's backfill), and daemons send them.
 */
const schema = `t_${randomBytes(6).toString('hex')}`;
let pool: pg.Pool;
beforeAll(async () => {
  pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
});
afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
  await pool.end();
});

async function migrateUpTo(version: number): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query(`CREATE SCHEMA "${schema}"; SET search_path TO "${schema}", public`);
    await client.query(
      'CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    for (const m of await loadMigrations()) {
      if (m.version > version) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
        m.version,
        m.name,
      ]);
    }
  } finally {
    client.release();
  }
}

describe('migration 0010 (upstream routes)', () => {
  it('backfills routes for requests that can still be sent; daemons send them as before', async () => {
    const mock = await startMockUpstream();
    try {
      await migrateUpTo(9);
      const s = `"${schema}"`;
      // A batch as version 9 made it: one template with its own key, two without (routed by the
      // claiming daemon then), one request already completed.
      const { rows: files } = await pool.query(
        `INSERT INTO ${s}.files (name, template_count) VALUES ('f', 3) RETURNING id`,
      );
      const fileId = files[0].id;
      await pool.query(
        `INSERT INTO ${s}.request_templates (file_id, line_number, custom_id, endpoint, method, path, body, model, api_key)
         VALUES ($1, 1, 'own-key', $2, 'POST', '/v1/chat/completions', '{"model":"m"}', 'm', 'sk-template-key'),
                ($1, 2, 'daemon-key', $2, 'POST', '/v1/chat/completions', '{"model":"m"}', 'm', ''),
                ($1, 3, 'done', $2, 'POST', '/v1/chat/completions', '{"model":"m"}', 'm', '')`,
        [fileId, mock.url],
      );
      const { rows: batches } = await pool.query(
        `INSERT INTO ${s}.batches (file_id, total_requests, in_progress_at, expires_at) VALUES ($1, 3, now(), now() + interval '1 hour') RETURNING id`,
        [fileId],
      );
      const batchId = batches[0].id;
      await pool.query(
        `INSERT INTO ${s}.requests (batch_id, template_id, line_number, model) SELECT $1, id, line_number, model FROM ${s}.request_templates WHERE file_id = $2`,
        [batchId, fileId],
      );
      await pool.query(
        `UPDATE ${s}.requests SET state = 'completed', completed_at = now(), response_status = 200, response_body = '{}' WHERE line_number = 3`,
      );
      await pool.query(`INSERT INTO ${s}.batch_models (batch_id, model) VALUES ($1, 'm')`, [batchId]);

      expect((await migrate(pool, { schema }))[0]).toBe(10);
      const { rows } = await pool.query(
        `SELECT r.line_number, u.upstream, u.credential FROM ${s}.requests r LEFT JOIN ${s}.upstream_routes u ON u.id = r.route_id ORDER BY 1`,
      );
      expect(rows).toEqual([
        { line_number: 1, upstream: mock.url, credential: 'template' },
        { line_number: 2, upstream: mock.url, credential: 'daemon' },
        { line_number: 3, upstream: null, credential: null },
      ]);

      // A daemon configured for that upstream sends the keyless row with its key, the other with its own.
      const m = new PostgresRequestManager(pool, {
        schema,
        logger: () => {},
        pollIntervalMs: 100,
        upstreamRouter: createUpstreamRouter({ upstream: mock.url, upstreamApiKey: 'sk-daemon-key' }),
      });
      const daemon = await m.run();
      try {
        await waitForBatchEnd(m, batchId);
      } finally {
        await daemon.stop();
      }
      const auth = Object.fromEntries(mock.requests.map((r) => [r.customId, r.headers.authorization]));
      expect(auth).toEqual({ 'own-key': 'Bearer sk-template-key', 'daemon-key': 'Bearer sk-daemon-key' });
    } finally {
      await mock.close();
    }
  });
});
