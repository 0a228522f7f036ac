import { batchCost, type ModelPrice, type ModelUsage, type UsageTotals } from '../domain/usage.js';

/** A batch's usage in OpenAI's wire shape, and fusillade's per-model usage and cost beside it. */

export interface UsageObject {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

/** One model's part of a batch's usage, and its cost (null: the model has no price). */
export interface ModelUsageObject extends UsageObject {
  model: string;
  cost: number | null;
}

export interface UsageFields {
  usage: UsageObject;
  /** fusillade: usage per model of the batch (empty for a live batch in a list). */
  model_usage: ModelUsageObject[];
  /**
   * fusillade: the batch's cost from the server's price table (models.MODEL.price, per million
   * tokens), summed over the models that have a price; null when none has.
   */
  cost: number | null;
}

export function usageObject(u: UsageTotals): UsageObject {
  return {
    input_tokens: u.inputTokens,
    input_tokens_details: { cached_tokens: u.cachedTokens },
    output_tokens: u.outputTokens,
    output_tokens_details: { reasoning_tokens: u.reasoningTokens },
    total_tokens: u.totalTokens,
  };
}

export function usageFields(
  usage: UsageTotals,
  byModel: readonly ModelUsage[],
  prices: Readonly<Record<string, ModelPrice>>,
): UsageFields {
  const cost = batchCost(byModel, prices);
  return {
    usage: usageObject(usage),
    model_usage: byModel.map((u, i) => ({ model: u.model, ...usageObject(u), cost: cost.byModel[i]!.cost })),
    cost: cost.total,
  };
}
