import type { TokenCounter } from '../domain/token-cost.js';

/**
 * Real tokenizers for the models whose encoding is public (OpenAI's), from gpt-tokenizer 4.0.0:
 * pure JavaScript, no dependencies, no engines restriction. Loaded on first use per encoding and only
 * for models with a tokens-per-minute budget in force (the rest never pay for it); until an encoding
 * has loaded, and for every other model, the character estimate counts (src/domain/token-cost.ts).
 *
 * Measured (Node 20, 2-core machine under load, 2,000 English prompts each): o200k_base loads in
 * ≈0.8 s (≈40 MB heap) and counts a 220-character prompt in ≈145 µs, 1.1k characters in ≈180 µs,
 * 5.6k in ≈570 µs; cl100k_base loads in ≈0.25 s and counts in ≈60 / 80 / 250 µs. js-tiktoken 1.0.21
 * loaded in 2 s and counted in 750 / 2,200 / 8,200 µs; tiktoken 1.0.22 (WebAssembly) in 0.66 s and
 * 280 / 340 / 3,000 µs. All three unpack to 22–30 MB.
 *
 * Counting happens in the daemon when a request of a budgeted model is claimed, not at ingest:
 * at ingest every request of every model would pay (≈150+ µs each, against ≈13 µs a row for COPY);
 * at claim only requests of models with a token budget pay, and their rate is bounded by that
 * budget (2M tokens a minute at ≈500 tokens a request is ≈67 requests/s: ≈1–2% of a core).
 */

type Encoding = 'o200k_base' | 'cl100k_base';

/** The encoding of an OpenAI model name, or null when none is known (the character estimate counts). */
export function encodingForModel(model: string): Encoding | null {
  const m = model.toLowerCase().replace(/^(openai\/|azure\/)/, '');
  if (/^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|omni-moderation|codex-)/.test(m))
    return 'o200k_base';
  if (/^(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada-002)/.test(m)) return 'cl100k_base';
  return null;
}

const loaded = new Map<Encoding, TokenCounter>();
const loading = new Map<Encoding, Promise<TokenCounter | null>>();

async function load(encoding: Encoding): Promise<TokenCounter | null> {
  try {
    const mod =
      encoding === 'o200k_base'
        ? await import('gpt-tokenizer/encoding/o200k_base')
        : await import('gpt-tokenizer/encoding/cl100k_base');
    const counter: TokenCounter = (text) => (text === '' ? 0 : mod.countTokens(text));
    loaded.set(encoding, counter);
    return counter;
  } catch {
    return null;
  }
}

/**
 * The model's tokenizer if it has loaded; otherwise starts loading it (in the background) and returns
 * null, so the caller uses the character estimate meanwhile.
 */
export function tokenCounterFor(model: string): TokenCounter | null {
  const encoding = encodingForModel(model);
  if (encoding === null) return null;
  const counter = loaded.get(encoding);
  if (counter) return counter;
  if (!loading.has(encoding)) loading.set(encoding, load(encoding));
  return null;
}

/** Resolves once the model's tokenizer has loaded (null when none is known or it failed to load). */
export async function loadTokenCounter(model: string): Promise<TokenCounter | null> {
  const encoding = encodingForModel(model);
  if (encoding === null) return null;
  const counter = loaded.get(encoding);
  if (counter) return counter;
  let p = loading.get(encoding);
  if (!p) {
    p = load(encoding);
    loading.set(encoding, p);
  }
  return p;
}
