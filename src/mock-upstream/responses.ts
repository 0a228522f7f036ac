/**
 * The mock upstream's answers, one per endpoint, in the shape the real APIs return (OpenAI's chat
 * completions, completions, responses, embeddings and moderations; Anthropic's messages), each with
 * the `usage` block its API reports, so token accounting can be tested end to end. Token counts are
 * fixed per endpoint (tests compare sums), embeddings count per input.
 */
import { embeddingInputCount } from '../domain/batch-input.js';

let counter = 0;

function nextId(prefix: string): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${prefix}${counter.toString(36)}`;
}

export function mockRequestId(): string {
  return nextId('req_mock_');
}

/** Token counts of one answer, per endpoint. */
export const MOCK_USAGE = {
  chat: { prompt: 10, cached: 4, completion: 2, reasoning: 1 },
  completions: { prompt: 5, completion: 3 },
  responses: { input: 9, cached: 2, output: 4, reasoning: 1 },
  /** Per input of the request. */
  embeddings: { prompt: 8 },
  messages: { input: 7, cacheRead: 3, cacheCreation: 1, output: 5 },
} as const;

const MODERATION_CATEGORIES = [
  'harassment',
  'harassment/threatening',
  'hate',
  'hate/threatening',
  'illicit',
  'illicit/violent',
  'self-harm',
  'self-harm/intent',
  'self-harm/instructions',
  'sexual',
  'sexual/minors',
  'violence',
  'violence/graphic',
] as const;

export type MockEndpoint = 'chat' | 'completions' | 'responses' | 'embeddings' | 'moderations' | 'messages';

/** Which API a path belongs to (chat completions for anything unknown). */
export function endpointOf(path: string): MockEndpoint {
  if (path.endsWith('/chat/completions')) return 'chat';
  if (path.endsWith('/completions')) return 'completions';
  if (path.endsWith('/responses')) return 'responses';
  if (path.endsWith('/embeddings')) return 'embeddings';
  if (path.endsWith('/moderations')) return 'moderations';
  if (path.endsWith('/messages')) return 'messages';
  return 'chat';
}

/** The answer object for a successful call to `path` (see okBody). */
export function okObject(path: string, model: string, parsed: unknown): Record<string, unknown> {
  const created = Math.floor(Date.now() / 1000);
  const input = (parsed as { input?: unknown } | null)?.input;
  switch (endpointOf(path)) {
    case 'embeddings': {
      const count = embeddingInputCount(input);
      const tokens = MOCK_USAGE.embeddings.prompt * count;
      return {
        object: 'list',
        data: Array.from({ length: count }, (_, index) => ({
          object: 'embedding',
          index,
          embedding: [0.0023, -0.0093, 0.0157, 0.0041],
        })),
        model,
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      };
    }
    case 'completions': {
      const u = MOCK_USAGE.completions;
      return {
        id: nextId('cmpl-mock'),
        object: 'text_completion',
        created,
        model,
        system_fingerprint: 'fp_mock',
        choices: [{ text: 'mock completion', index: 0, logprobs: null, finish_reason: 'stop' }],
        usage: {
          prompt_tokens: u.prompt,
          completion_tokens: u.completion,
          total_tokens: u.prompt + u.completion,
        },
      };
    }
    case 'responses': {
      const u = MOCK_USAGE.responses;
      return {
        id: nextId('resp_mock'),
        object: 'response',
        created_at: created,
        status: 'completed',
        error: null,
        incomplete_details: null,
        instructions: null,
        max_output_tokens: null,
        model,
        output: [
          {
            type: 'message',
            id: nextId('msg_mock'),
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text: 'mock response', annotations: [] }],
          },
        ],
        parallel_tool_calls: true,
        previous_response_id: null,
        reasoning: { effort: null, summary: null },
        store: true,
        temperature: 1,
        text: { format: { type: 'text' } },
        tool_choice: 'auto',
        tools: [],
        top_p: 1,
        truncation: 'disabled',
        usage: {
          input_tokens: u.input,
          input_tokens_details: { cached_tokens: u.cached },
          output_tokens: u.output,
          output_tokens_details: { reasoning_tokens: u.reasoning },
          total_tokens: u.input + u.output,
        },
        user: null,
        metadata: {},
      };
    }
    case 'moderations': {
      const none = (value: unknown) => Object.fromEntries(MODERATION_CATEGORIES.map((c) => [c, value]));
      return {
        id: nextId('modr-mock'),
        model,
        results: Array.from({ length: embeddingInputCount(input) }, () => ({
          flagged: false,
          categories: none(false),
          category_scores: none(0.0001),
          category_applied_input_types: none(['text']),
        })),
      };
    }
    case 'messages': {
      const u = MOCK_USAGE.messages;
      return {
        id: nextId('msg_mock'),
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text: 'mock message' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: {
          input_tokens: u.input,
          cache_creation_input_tokens: u.cacheCreation,
          cache_read_input_tokens: u.cacheRead,
          output_tokens: u.output,
        },
      };
    }
    case 'chat': {
      const u = MOCK_USAGE.chat;
      return {
        id: nextId('chatcmpl-mock'),
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: 'mock reply', refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: 'stop',
          },
        ],
        usage: {
          prompt_tokens: u.prompt,
          completion_tokens: u.completion,
          total_tokens: u.prompt + u.completion,
          prompt_tokens_details: { cached_tokens: u.cached, audio_tokens: 0 },
          completion_tokens_details: {
            reasoning_tokens: u.reasoning,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
          },
        },
        service_tier: 'default',
        system_fingerprint: 'fp_mock',
      };
    }
  }
}

/** The JSON body the mock returns for a successful call to `path`. */
export function okBody(path: string, model: string, parsed: unknown): string {
  return JSON.stringify(okObject(path, model, parsed));
}
