/**
 * What `fusillade status` and `fusillade run` print about a batch's tokens and cost: pure, from the
 * batch object's usage fields (src/server/usage-object.ts).
 */
import type { ModelUsageObject, UsageObject } from '../server/usage-object.js';

const count = (n: number): string => n.toLocaleString('en-US');

/** A cost in the price table's currency: enough digits for fractions of a cent. */
export function formatCost(cost: number): string {
  return cost >= 100
    ? cost.toFixed(2)
    : cost
        .toPrecision(4)
        .replace(/(\.\d*?)0+$/, '$1')
        .replace(/\.$/, '');
}

/** "1,234 in (56 cached), 789 out (12 reasoning), 2,023 total" */
export function tokensText(u: UsageObject): string {
  const cached = u.input_tokens_details.cached_tokens;
  const reasoning = u.output_tokens_details.reasoning_tokens;
  return (
    `${count(u.input_tokens)} in${cached > 0 ? ` (${count(cached)} cached)` : ''}, ` +
    `${count(u.output_tokens)} out${reasoning > 0 ? ` (${count(reasoning)} reasoning)` : ''}, ` +
    `${count(u.total_tokens)} total`
  );
}

/** The batch's lines: tokens, cost (with the models that have no price), then one line per model. */
export function usageLines(b: {
  usage?: UsageObject;
  model_usage?: ModelUsageObject[];
  cost?: number | null;
}): string[] {
  if (!b.usage) return [];
  const lines = [`  tokens ${tokensText(b.usage)}`];
  const byModel = b.model_usage ?? [];
  const unpriced = byModel.filter((m) => m.cost === null && m.total_tokens > 0).map((m) => m.model);
  if (b.cost != null) {
    lines.push(
      `  cost ${formatCost(b.cost)}${unpriced.length > 0 ? ` (no price for ${unpriced.join(', ')})` : ''}`,
    );
  }
  if (byModel.length > 1 || (byModel.length === 1 && b.cost != null)) {
    for (const m of byModel) {
      lines.push(`    ${m.model}: ${tokensText(m)}${m.cost !== null ? `; cost ${formatCost(m.cost)}` : ''}`);
    }
  }
  return lines;
}
