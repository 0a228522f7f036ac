import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import { NotFoundError, ValidationError } from '../domain/errors.js';
import { isUuid } from './rows.js';

/**
 * API keys of the Batch API server. A key is shown once, at creation; the table keeps its SHA-256
 * hash (a key has 256 random bits, so a fast hash is enough: there is nothing to brute-force) and
 * a short prefix to recognise it in lists.
 */

export interface ApiKeyInfo {
  id: string;
  owner: string;
  name: string | null;
  /** The first characters of the key, e.g. "fsk_AbCd1234". */
  prefix: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** The plaintext key: returned here once, never stored. */
  key: string;
}

const KEY_PREFIX = 'fsk_';
const PREFIX_LENGTH = KEY_PREFIX.length + 8;
/** last_used_at is refreshed at most this often per key, so auth stays a read. */
const LAST_USED_RESOLUTION_MS = 60_000;

interface KeyRow {
  id: string;
  owner: string;
  name: string | null;
  key_prefix: string;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

const COLUMNS = 'id, owner, name, key_prefix, created_at, last_used_at, revoked_at';

function toInfo(r: KeyRow): ApiKeyInfo {
  return {
    id: r.id,
    owner: r.owner,
    name: r.name,
    prefix: r.key_prefix,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
  };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export async function createApiKey(
  pool: pg.Pool,
  schema: string,
  options: { owner: string; name?: string | null },
): Promise<CreatedApiKey> {
  const owner = typeof options.owner === 'string' ? options.owner.trim() : '';
  if (owner === '' || owner.length > 200) {
    throw new ValidationError([
      { code: 'invalid_owner', param: 'owner', message: 'owner must be a non-empty name (≤ 200 characters)' },
    ]);
  }
  const key = KEY_PREFIX + randomBytes(32).toString('base64url');
  const { rows } = await pool.query<KeyRow>(
    `INSERT INTO ${schema}.api_keys (owner, name, key_hash, key_prefix) VALUES ($1, $2, $3, $4)
     RETURNING ${COLUMNS}`,
    [owner, options.name ?? null, hashApiKey(key), key.slice(0, PREFIX_LENGTH)],
  );
  return { ...toInfo(rows[0]!), key };
}

/** The key's owner if the key exists and is not revoked, else null. One indexed read. */
export async function verifyApiKey(
  pool: pg.Pool,
  schema: string,
  key: string,
): Promise<{ id: string; owner: string } | null> {
  if (typeof key !== 'string' || !key.startsWith(KEY_PREFIX) || key.length > 200) return null;
  const { rows } = await pool.query<{ id: string; owner: string; last_used_at: Date | null }>(
    `SELECT id, owner, last_used_at FROM ${schema}.api_keys WHERE key_hash = $1 AND revoked_at IS NULL`,
    [hashApiKey(key)],
  );
  const row = rows[0];
  if (!row) return null;
  if (!row.last_used_at || Date.now() - row.last_used_at.getTime() > LAST_USED_RESOLUTION_MS) {
    // Bookkeeping only: never delay or fail the request for it.
    pool.query(`UPDATE ${schema}.api_keys SET last_used_at = now() WHERE id = $1`, [row.id]).catch(() => {});
  }
  return { id: row.id, owner: row.owner };
}

export async function listApiKeys(
  pool: pg.Pool,
  schema: string,
  options: { owner?: string; includeRevoked?: boolean } = {},
): Promise<ApiKeyInfo[]> {
  const { rows } = await pool.query<KeyRow>(
    `SELECT ${COLUMNS} FROM ${schema}.api_keys
      WHERE ($1::text IS NULL OR owner = $1) AND ($2 OR revoked_at IS NULL)
      ORDER BY created_at, id`,
    [options.owner ?? null, options.includeRevoked ?? false],
  );
  return rows.map(toInfo);
}

/** Revokes by id or by prefix (as `keys list` shows it); effective for the very next request. */
export async function revokeApiKey(pool: pg.Pool, schema: string, idOrPrefix: string): Promise<ApiKeyInfo> {
  const byId = isUuid(idOrPrefix);
  const { rows } = await pool.query<KeyRow>(
    `UPDATE ${schema}.api_keys SET revoked_at = coalesce(revoked_at, now())
      WHERE ${byId ? 'id = $1::uuid' : 'key_prefix = $1'}
        AND (SELECT count(*) FROM ${schema}.api_keys WHERE ${byId ? 'id = $1::uuid' : 'key_prefix = $1'}) = 1
      RETURNING ${COLUMNS}`,
    [idOrPrefix],
  );
  if (!rows[0]) throw new NotFoundError('api_key', idOrPrefix);
  return toInfo(rows[0]);
}

/** The API keys of one database (a pool and a quoted schema); the server and `fusillade keys` use it. */
export class ApiKeys {
  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
  ) {}

  /** A new key for the owner; its secret is in the answer only. */
  create(options: { owner: string; name?: string | null }): Promise<CreatedApiKey> {
    return createApiKey(this.pool, this.schema, options);
  }

  /** The owner of a valid, unrevoked key, or null. */
  verify(key: string): Promise<{ id: string; owner: string } | null> {
    return verifyApiKey(this.pool, this.schema, key);
  }

  list(options: { owner?: string; includeRevoked?: boolean } = {}): Promise<ApiKeyInfo[]> {
    return listApiKeys(this.pool, this.schema, options);
  }

  /** Revokes by id or by prefix; NotFoundError unless exactly one key matches. */
  revoke(idOrPrefix: string): Promise<ApiKeyInfo> {
    return revokeApiKey(this.pool, this.schema, idOrPrefix);
  }
}
