import type pg from 'pg';
import { ValidationError } from '../domain/errors.js';

/**
 * Owners' weights in the fair share of each model's slots (migration 0017, src/db/sql/queue/fair-share.ts,
 * docs/decisions/0007): an owner with weight 3 gets three times the slots of an owner with weight 1
 * while both have work. An owner without a row has weight 1. Batches without an owner count as the
 * owner "" (the empty name). Daemons read the weights at every claim: a change applies at once.
 */

export interface OwnerWeight {
  owner: string;
  weight: number;
  updatedAt: Date;
}

/** The weight every owner has until one is set. */
export const DEFAULT_OWNER_WEIGHT = 1;
export const MAX_OWNER_WEIGHT = 1_000_000;

/** Checks an owner's weight (a positive number up to MAX_OWNER_WEIGHT); a ValidationError otherwise. */
export function checkOwnerWeight(owner: unknown, weight: unknown): { owner: string; weight: number } {
  if (typeof owner !== 'string' || owner.length > 200) {
    throw new ValidationError([
      { code: 'invalid_owner', param: 'owner', message: 'owner must be a name of at most 200 characters' },
    ]);
  }
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0 || weight > MAX_OWNER_WEIGHT) {
    throw new ValidationError([
      {
        code: 'invalid_weight',
        param: 'weight',
        message: `weight must be a number above 0 and at most ${MAX_OWNER_WEIGHT}, got ${JSON.stringify(weight)}`,
      },
    ]);
  }
  return { owner, weight };
}

/** Sets an owner's weight; returns the weight it had before (DEFAULT_OWNER_WEIGHT when none was set). */
export async function setOwnerWeight(
  pool: pg.Pool,
  s: string,
  owner: string,
  weight: number,
): Promise<number> {
  const checked = checkOwnerWeight(owner, weight);
  const { rows } = await pool.query<{ previous: number | null }>(
    `WITH previous AS (SELECT weight FROM ${s}.owner_weights WHERE owner = $1),
          upserted AS (
            INSERT INTO ${s}.owner_weights (owner, weight) VALUES ($1, $2)
            ON CONFLICT (owner) DO UPDATE SET weight = EXCLUDED.weight, updated_at = now())
     SELECT (SELECT weight FROM previous) AS previous`,
    [checked.owner, checked.weight],
  );
  return rows[0]?.previous ?? DEFAULT_OWNER_WEIGHT;
}

/** The weights set, by owner name (owners not listed have DEFAULT_OWNER_WEIGHT). */
export async function listOwnerWeights(pool: pg.Pool, s: string): Promise<OwnerWeight[]> {
  const { rows } = await pool.query<{ owner: string; weight: number; updated_at: Date }>(
    `SELECT owner, weight, updated_at FROM ${s}.owner_weights ORDER BY owner`,
  );
  return rows.map((r) => ({ owner: r.owner, weight: r.weight, updatedAt: r.updated_at }));
}

/** The owners' weights of one database (a pool and a quoted schema): the library's and `fusillade keys set-weight`'s. */
export class OwnerWeights {
  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
  ) {}

  /**
   * Sets an owner's weight (a number above 0; weight 3 gets three times the slots of weight 1
   * while both have work), across all daemons from their next claim. Returns the previous weight.
   */
  set(owner: string, weight: number): Promise<number> {
    return setOwnerWeight(this.pool, this.schema, owner, weight);
  }

  /** The weights set, by owner (every other owner has weight 1). */
  list(): Promise<OwnerWeight[]> {
    return listOwnerWeights(this.pool, this.schema);
  }
}
