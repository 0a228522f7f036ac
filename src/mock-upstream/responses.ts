/**
 * OpenAI-shaped answers of the mock upstream, one per endpoint, each with a `usage` block so token
 * accounting can be tested end to end.
 */
let counter = 0;

function nextId(prefix: string): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${prefix}${counter.toString(36)}`;
}

export function mockRequestId(): string {
  return nextId('req_mock_');
}

/** The JSON body the mock returns for a successful call to `path`. */
export function okBody(path: string, model: string, parsed: unknown): string {
  const created = Math.floor(Date.now() / 1000);
  if (path.endsWith('/embeddings')) {
    const input = (parsed as { input?: unknown } | null)?.input;
    const count = Array.isArray(input) ? input.length : 1;
    return JSON.stringify({
      object: 'list',
      data: Array.from({ length: count }, (_, index) => ({
        object: 'embedding',
        index,
        embedding: [0.0023, -0.0093, 0.0157, 0.0041],
      })),
      model,
      usage: { prompt_tokens: 8, total_tokens: 8 },
    });
  }
  if (path.endsWith('/completions') && !path.endsWith('/chat/completions')) {
    return JSON.stringify({
      id: nextId('cmpl-mock'),
      object: 'text_completion',
      created,
      model,
      choices: [{ text: 'mock completion', index: 0, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
    });
  }
  if (path.endsWith('/responses')) {
    return JSON.stringify({
      id: nextId('resp_mock'),
      object: 'response',
      created_at: created,
      status: 'completed',
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
      usage: { input_tokens: 9, output_tokens: 4, total_tokens: 13 },
    });
  }
  if (path.endsWith('/moderations')) {
    return JSON.stringify({
      id: nextId('modr-mock'),
      model,
      results: [{ flagged: false, categories: {}, category_scores: {} }],
    });
  }
  return JSON.stringify({
    id: nextId('chatcmpl-mock'),
    object: 'chat.completion',
    created,
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: 'mock reply', refusal: null },
        logprobs: null,
        finish_reason: 'stop',
      },
    ],
    usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
  });
}
