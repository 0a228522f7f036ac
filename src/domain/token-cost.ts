/**
 * What a request costs against a tokens-per-minute limit before it is sent, estimated the way
 * providers count it at admission (as OpenAI and Anthropic document): the prompt's tokens plus the requested maximum
 * output (`max_tokens`, `max_completion_tokens`, `max_output_tokens`; else a configured default),
 * times `n` choices. Not the tokens later used: OpenAI charges the requested maximum against the
 * limit, so an answer's `usage` does not correct the estimate (the upstream's headers do, see
 * docs/decisions/rate-limits.md). Pure: the tokenizer, where one is known for the model, is
 * passed in (src/daemon/tokenizer.ts loads it).
 *
 * The prompt is the text the model reads: chat `messages[].content` (strings or text parts),
 * Anthropic `system`, Responses `input` and `instructions`, completions `prompt`, embeddings
 * `input`. Images, audio and tool schemas are not counted (their cost is priced per provider; the
 * headers' correction absorbs the difference).
 */

/** Counts the tokens of a text with a real tokenizer (e.g. gpt-tokenizer's o200k_base). */
export type TokenCounter = (text: string) => number;

export interface TokenCostOptions {
  /** Output tokens assumed when a request names no maximum (chat, responses, completions). */
  defaultMaxOutputTokens: number;
}

/** Characters per token of the estimate used when no tokenizer is known for the model. */
export const CHARS_PER_TOKEN = 4;
/** Tokens a chat message costs beyond its text (role and separators, as OpenAI's cookbook counts). */
export const TOKENS_PER_MESSAGE = 4;

export interface PromptText {
  /** The prompt's texts, concatenated with newlines. */
  text: string;
  /** Chat messages (each costs TOKENS_PER_MESSAGE more). */
  messages: number;
}

function pushContent(out: string[], content: unknown): void {
  if (typeof content === 'string') out.push(content);
  else if (Array.isArray(content)) {
    for (const part of content) {
      if (typeof part === 'string') out.push(part);
      else if (part && typeof part === 'object') {
        const p = part as { text?: unknown; content?: unknown; input_text?: unknown };
        if (typeof p.text === 'string') out.push(p.text);
        else if (typeof p.input_text === 'string') out.push(p.input_text);
        else if (p.content !== undefined) pushContent(out, p.content);
      }
    }
  }
}

/** The text of a request body's prompt (see the module comment for the fields read). */
export function promptText(body: unknown): PromptText {
  const out: string[] = [];
  let messages = 0;
  if (!body || typeof body !== 'object') return { text: '', messages: 0 };
  const b = body as Record<string, unknown>;
  if (Array.isArray(b.messages)) {
    for (const m of b.messages) {
      messages++;
      if (m && typeof m === 'object') pushContent(out, (m as { content?: unknown }).content);
    }
  }
  if (b.system !== undefined) pushContent(out, b.system);
  if (typeof b.instructions === 'string') out.push(b.instructions);
  if (b.input !== undefined) {
    if (Array.isArray(b.input) && b.input.some((x) => x && typeof x === 'object' && 'role' in x)) {
      for (const m of b.input) {
        messages++;
        if (m && typeof m === 'object') pushContent(out, (m as { content?: unknown }).content);
      }
    } else pushContent(out, b.input);
  }
  if (b.prompt !== undefined) pushContent(out, b.prompt);
  return { text: out.join('\n'), messages };
}

function positiveInt(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null;
}

/**
 * The output the request may produce, as the provider reserves it: its maximum times `n`. Embedding
 * and moderation requests produce none.
 */
export function maxOutputTokens(body: unknown, path: string, options: TokenCostOptions): number {
  if (path.endsWith('/embeddings') || path.endsWith('/moderations')) return 0;
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const max =
    positiveInt(b.max_completion_tokens) ??
    positiveInt(b.max_tokens) ??
    positiveInt(b.max_output_tokens) ??
    options.defaultMaxOutputTokens;
  const n = positiveInt(b.n) ?? 1;
  return max * Math.max(1, n);
}

/** The character estimate of a text's tokens (≈ what OpenAI's admission estimate counts). */
export function charEstimate(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

/**
 * The estimated cost of one request: prompt tokens (the tokenizer's count when given, else the
 * character estimate) plus message overhead plus the maximum output. A body that is not JSON costs
 * its length in characters / 4 plus the default output.
 */
export function estimateTokenCost(
  bodyText: string,
  path: string,
  options: TokenCostOptions,
  counter: TokenCounter | null = null,
): number {
  let body: unknown;
  try {
    body = JSON.parse(bodyText);
  } catch {
    return charEstimate(bodyText) + options.defaultMaxOutputTokens;
  }
  const prompt = promptText(body);
  const promptTokens = counter ? counter(prompt.text) : charEstimate(prompt.text);
  return promptTokens + prompt.messages * TOKENS_PER_MESSAGE + maxOutputTokens(body, path, options);
}
