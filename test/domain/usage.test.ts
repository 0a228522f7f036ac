import { describe, expect, it } from 'vitest';
import { formatCost, usageLines } from '../../src/cli/usage-lines.js';
import { batchCost, extractUsage, modelPriceProblem, usageCost } from '../../src/domain/usage.js';
import { usageFields } from '../../src/server/usage-object.js';

describe('extractUsage: one vocabulary for every API', () => {
  it('chat completions and completions: prompt/completion tokens and their details', () => {
    expect(
      extractUsage({
        usage: {
          prompt_tokens: 10,
          completion_tokens: 4,
          total_tokens: 14,
          prompt_tokens_details: { cached_tokens: 6, audio_tokens: 0 },
          completion_tokens_details: { reasoning_tokens: 3 },
        },
      }),
    ).toEqual({ inputTokens: 10, cachedTokens: 6, outputTokens: 4, reasoningTokens: 3, totalTokens: 14 });
    expect(extractUsage({ usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } })).toEqual({
      inputTokens: 3,
      cachedTokens: null,
      outputTokens: 4,
      reasoningTokens: null,
      totalTokens: 7,
    });
  });

  it('responses: input/output tokens and their details; a missing total is their sum', () => {
    expect(
      extractUsage({
        usage: {
          input_tokens: 9,
          input_tokens_details: { cached_tokens: 2 },
          output_tokens: 4,
          output_tokens_details: { reasoning_tokens: 1 },
          total_tokens: 13,
        },
      }),
    ).toEqual({ inputTokens: 9, cachedTokens: 2, outputTokens: 4, reasoningTokens: 1, totalTokens: 13 });
    expect(extractUsage({ usage: { input_tokens: 5, output_tokens: 6 } })).toMatchObject({ totalTokens: 11 });
  });

  it('embeddings: prompt tokens only', () => {
    expect(extractUsage({ usage: { prompt_tokens: 16, total_tokens: 16 } })).toEqual({
      inputTokens: 16,
      cachedTokens: null,
      outputTokens: null,
      reasoningTokens: null,
      totalTokens: 16,
    });
  });

  it('Anthropic messages: cache reads and writes are input, cache reads are its cached part', () => {
    expect(
      extractUsage({
        usage: {
          input_tokens: 7,
          cache_read_input_tokens: 3,
          cache_creation_input_tokens: 1,
          output_tokens: 5,
        },
      }),
    ).toEqual({ inputTokens: 11, cachedTokens: 3, outputTokens: 5, reasoningTokens: null, totalTokens: 16 });
    expect(
      extractUsage({ usage: { input_tokens: 7, cache_creation_input_tokens: 2, output_tokens: 1 } }),
    ).toEqual({ inputTokens: 9, cachedTokens: 0, outputTokens: 1, reasoningTokens: null, totalTokens: 10 });
  });

  it('no usage, or nonsense in it, reads as nothing', () => {
    const none = {
      inputTokens: null,
      cachedTokens: null,
      outputTokens: null,
      reasoningTokens: null,
      totalTokens: null,
    };
    expect(extractUsage({})).toEqual(none);
    expect(extractUsage(null)).toEqual(none);
    expect(extractUsage({ usage: 'x' })).toEqual(none);
    expect(
      extractUsage({
        usage: { prompt_tokens: -1, completion_tokens: 1.5, prompt_tokens_details: { cached_tokens: 'a' } },
      }),
    ).toEqual(none);
  });
});

describe('cost', () => {
  const u = {
    inputTokens: 1_000_000,
    cachedTokens: 400_000,
    outputTokens: 200_000,
    reasoningTokens: 50_000,
    totalTokens: 1_200_000,
  };

  it('prices uncached input, cached input and output per million tokens', () => {
    expect(usageCost(u, { input: 2, cachedInput: 0.5, output: 8 })).toBeCloseTo(
      0.6 * 2 + 0.4 * 0.5 + 0.2 * 8,
      12,
    );
    // Without a cached price, cached input costs as input.
    expect(usageCost(u, { input: 2, output: 8 })).toBeCloseTo(2 + 1.6, 12);
  });

  it('sums the priced models, says which have no price, and is null when none has', () => {
    const byModel = [
      { model: 'a', ...u },
      { model: 'b', ...u },
    ];
    expect(batchCost(byModel, { a: { input: 1, output: 1 } })).toEqual({
      total: 1.2,
      byModel: [
        { model: 'a', cost: 1.2 },
        { model: 'b', cost: null },
      ],
    });
    expect(batchCost(byModel, {}).total).toBeNull();
    // A model named like an Object.prototype member has no price unless given one.
    expect(batchCost([{ model: 'constructor', ...u }], {}).total).toBeNull();
  });

  it('refuses prices that are not { input, cachedInput?, output } of numbers >= 0', () => {
    expect(modelPriceProblem({ input: 1, output: 2 })).toBeNull();
    expect(modelPriceProblem({ input: 1, cachedInput: 0, output: 2 })).toBeNull();
    expect(modelPriceProblem(3)).toMatch(/must be an object/);
    expect(modelPriceProblem({ input: 1 })).toMatch(/needs "output"/);
    expect(modelPriceProblem({ input: -1, output: 1 })).toMatch(/input must be a number >= 0/);
    expect(modelPriceProblem({ input: 1, output: 1, cached: 1 })).toMatch(/unknown field "cached"/);
  });

  it('status lines: tokens, cost with the unpriced models named, one line per model', () => {
    const byModel = [
      { model: 'a', ...u },
      { model: 'b', ...u },
    ];
    const lines = usageLines(usageFields(u, byModel, { a: { input: 1, output: 1 } }));
    expect(lines).toEqual([
      '  tokens 1,000,000 in (400,000 cached), 200,000 out (50,000 reasoning), 1,200,000 total',
      '  cost 1.2 (no price for b)',
      '    a: 1,000,000 in (400,000 cached), 200,000 out (50,000 reasoning), 1,200,000 total; cost 1.2',
      '    b: 1,000,000 in (400,000 cached), 200,000 out (50,000 reasoning), 1,200,000 total',
    ]);
    expect(usageLines({})).toEqual([]);
    expect(formatCost(0.000123456)).toBe('0.0001235');
    expect(formatCost(1234.5)).toBe('1234.50');
  });
});
