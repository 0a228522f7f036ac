import type pg from 'pg';
import { type ModelUsage, sumUsage, type UsageTotals } from '../../domain/usage.js';

/**
 * A batch's token usage, per model and in total (src/domain/usage.ts). A finished batch's is read
 * from the sums its ending statement froze (batch_models, src/db/sql/batches/finalize-batch.ts): a row
 * per model. A live batch's is summed from its completed requests through requests_batch_state_idx.
 */

export interface BatchUsage {
  usage: UsageTotals;
  byModel: ModelUsage[];
}

interface UsageRow {
  batch_id: string;
  model: string;
  input_tokens: string | null;
  cached_tokens: string | null;
  output_tokens: string | null;
  reasoning_tokens: string | null;
  total_tokens: string | null;
}

function modelUsage(r: UsageRow): ModelUsage {
  return {
    model: r.model,
    inputTokens: Number(r.input_tokens ?? 0),
    cachedTokens: Number(r.cached_tokens ?? 0),
    outputTokens: Number(r.output_tokens ?? 0),
    reasoningTokens: Number(r.reasoning_tokens ?? 0),
    totalTokens: Number(r.total_tokens ?? 0),
  };
}

function batchUsage(byModel: ModelUsage[]): BatchUsage {
  return { usage: sumUsage(byModel), byModel };
}

/** Usage of a live batch, summed from its completed requests, per model. */
export async function liveUsage(pool: pg.Pool, s: string, id: string): Promise<BatchUsage> {
  const { rows } = await pool.query<UsageRow>(
    `SELECT $1::uuid AS batch_id, model,
            sum(input_tokens) AS input_tokens, sum(cached_tokens) AS cached_tokens,
            sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens,
            sum(total_tokens) AS total_tokens
       FROM ${s}.requests WHERE batch_id = $1 AND state = 'completed'
      GROUP BY model ORDER BY model`,
    [id],
  );
  return batchUsage(rows.map(modelUsage));
}

/** Usage of finished batches, per model, as their ending froze it: one row per batch and model. */
export async function frozenUsage(pool: pg.Pool, s: string, ids: string[]): Promise<Map<string, BatchUsage>> {
  const found = new Map<string, BatchUsage>();
  if (ids.length === 0) return found;
  const { rows } = await pool.query<UsageRow>(
    `SELECT batch_id, model, input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens
       FROM ${s}.batch_models WHERE batch_id = ANY($1::uuid[])
      ORDER BY batch_id, model`,
    [ids],
  );
  const byBatch = new Map<string, ModelUsage[]>();
  for (const r of rows) {
    const list = byBatch.get(r.batch_id) ?? [];
    list.push(modelUsage(r));
    byBatch.set(r.batch_id, list);
  }
  for (const [id, list] of byBatch) found.set(id, batchUsage(list));
  return found;
}
