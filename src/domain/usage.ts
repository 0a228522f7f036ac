/**
 * Token usage as the batch reports it, and what it costs. Pure: the daemon extracts one answer's
 * usage (extractUsage) and writes it on the request row; the statement that ends a batch sums the
 * rows per model (src/db/sql/batches/finalize-batch.ts); readers price the per-model sums (batchCost).
 *
 * One vocabulary for every API, OpenAI's batch `usage`:
 *   inputTokens      every prompt token, cached ones included
 *   cachedTokens     the part of inputTokens read from the provider's prompt cache
 *   outputTokens     every generated token, reasoning included
 *   reasoningTokens  the part of outputTokens spent reasoning
 *   totalTokens      as the API reports it, else inputTokens + outputTokens
 * Chat completions and completions say prompt_tokens / completion_tokens (details in
 * prompt_tokens_details.cached_tokens, completion_tokens_details.reasoning_tokens); responses say
 * input_tokens / output_tokens (input_tokens_details, output_tokens_details); embeddings report
 * prompt_tokens only; Anthropic messages count cache reads and cache writes apart from input_tokens
 * (cache_read_input_tokens, cache_creation_input_tokens), so their input is the sum of the three
 * and their cached part the cache reads. Moderations report none.
 */

/** One answer's token counts; null where the answer says nothing. */
export interface Usage {
  inputTokens: number | null;
  cachedTokens: number | null;
  outputTokens: number | null;
  reasoningTokens: number | null;
  totalTokens: number | null;
}

/** Summed token counts (a batch's, or one model's in a batch). */
export interface UsageTotals {
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  reasoningTokens: number;
  totalTokens: number;
}

/** One model's share of a batch's usage. */
export interface ModelUsage extends UsageTotals {
  model: string;
}

/** Prices of one model per million tokens; cachedInput defaults to input. */
export interface ModelPrice {
  input: number;
  cachedInput?: number;
  output: number;
}

/** A batch's cost from its per-model usage and a price table. */
export interface BatchCost {
  /** Sum of the priced models' costs; null when no model of the batch has a price. */
  total: number | null;
  /** Per model: its cost, or null when it has no price. */
  byModel: { model: string; cost: number | null }[];
}

export const NO_USAGE: Usage = {
  inputTokens: null,
  cachedTokens: null,
  outputTokens: null,
  reasoningTokens: null,
  totalTokens: null,
};

export const ZERO_USAGE: UsageTotals = {
  inputTokens: 0,
  cachedTokens: 0,
  outputTokens: 0,
  reasoningTokens: 0,
  totalTokens: 0,
};

/** A count as PostgreSQL's integer column holds it, else null (a missing or nonsensical field). */
function int(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 2_147_483_647
    ? value
    : null;
}

function detail(block: unknown, field: string): number | null {
  return block !== null && typeof block === 'object' ? int((block as Record<string, unknown>)[field]) : null;
}

/** The token counts of one parsed answer (see the module comment for the mapping). */
export function extractUsage(parsedBody: unknown): Usage {
  const usage = (parsedBody as { usage?: Record<string, unknown> } | null)?.usage;
  if (!usage || typeof usage !== 'object') return NO_USAGE;
  const cacheRead = int(usage.cache_read_input_tokens);
  const cacheWrite = int(usage.cache_creation_input_tokens);
  let input = int(usage.input_tokens) ?? int(usage.prompt_tokens);
  let cached = detail(usage.input_tokens_details ?? usage.prompt_tokens_details, 'cached_tokens');
  if (cacheRead !== null || cacheWrite !== null) {
    // Anthropic: input_tokens counts only what came after the last cache breakpoint.
    input = (input ?? 0) + (cacheRead ?? 0) + (cacheWrite ?? 0);
    cached = cacheRead ?? 0;
  }
  const output = int(usage.output_tokens) ?? int(usage.completion_tokens);
  const reasoning = detail(
    usage.output_tokens_details ?? usage.completion_tokens_details,
    'reasoning_tokens',
  );
  const stated = cacheRead !== null || cacheWrite !== null ? null : int(usage.total_tokens);
  const total = stated ?? (input !== null || output !== null ? (input ?? 0) + (output ?? 0) : null);
  return {
    inputTokens: input,
    cachedTokens: cached,
    outputTokens: output,
    reasoningTokens: reasoning,
    totalTokens: total,
  };
}

/** The sum of several models' usage. */
export function sumUsage(parts: readonly UsageTotals[]): UsageTotals {
  const sum = { ...ZERO_USAGE };
  for (const p of parts) {
    sum.inputTokens += p.inputTokens;
    sum.cachedTokens += p.cachedTokens;
    sum.outputTokens += p.outputTokens;
    sum.reasoningTokens += p.reasoningTokens;
    sum.totalTokens += p.totalTokens;
  }
  return sum;
}

/**
 * One model's cost: uncached input at `input`, cached input at `cachedInput` (else `input`), output
 * (reasoning included) at `output`, all per million tokens. Anthropic's cache writes are priced as
 * input (the provider charges them 1.25×: set `input` accordingly if they dominate).
 */
export function usageCost(u: UsageTotals, price: ModelPrice): number {
  const cached = Math.min(u.cachedTokens, u.inputTokens);
  return (
    ((u.inputTokens - cached) * price.input +
      cached * (price.cachedInput ?? price.input) +
      u.outputTokens * price.output) /
    1_000_000
  );
}

/** A batch's cost per model and in total, from a price table keyed by model. */
export function batchCost(
  byModel: readonly ModelUsage[],
  prices: Readonly<Record<string, ModelPrice>>,
): BatchCost {
  let total: number | null = null;
  const costs = byModel.map((u) => {
    const price = Object.hasOwn(prices, u.model) ? prices[u.model] : undefined;
    const cost = price ? usageCost(u, price) : null;
    if (cost !== null) total = (total ?? 0) + cost;
    return { model: u.model, cost };
  });
  return { total, byModel: costs };
}

/** Why a configured price is not valid (null when it is). */
export function modelPriceProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'must be an object { input, cachedInput?, output } (per million tokens)';
  }
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'input' && k !== 'cachedInput' && k !== 'output')
      return `has an unknown field "${k}" (known: input, cachedInput, output)`;
  }
  for (const k of ['input', 'output'] as const) {
    if (o[k] === undefined) return `needs "${k}" (per million tokens)`;
  }
  for (const k of ['input', 'cachedInput', 'output'] as const) {
    const x = o[k];
    if (x !== undefined && !(typeof x === 'number' && Number.isFinite(x) && x >= 0))
      return `${k} must be a number >= 0`;
  }
  return null;
}
