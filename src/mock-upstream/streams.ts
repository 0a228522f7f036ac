import { endpointOf } from './responses.js';

/**
 * The mock upstream's streamed answers (`"stream": true`): the same answer as okObject, sent as the
 * real APIs stream it: chat completion and completion chunks ending in `data: [DONE]` (the usage
 * chunk only with `stream_options.include_usage`), Responses API events ending in
 * `response.completed`, Anthropic message events ending in `message_stop`. Returns the events as
 * SSE text pieces, one per event, so the server can send them apart (and cut them short).
 */

type Json = Record<string, unknown>;

const sse = (data: unknown, event?: string) =>
  `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

/** Splits a text into up to three pieces (a stream's deltas). */
function pieces(text: string): string[] {
  const words = text.split(/(?<= )/);
  return words.length > 0 ? words : [text];
}

/** Whether a request body asks for a stream (endpoints that stream only). */
export function wantsStream(path: string, parsed: unknown): boolean {
  const kind = endpointOf(path);
  if (kind === 'embeddings' || kind === 'moderations') return false;
  return (parsed as { stream?: unknown } | null)?.stream === true;
}

/** The SSE events for `answer` (an okObject) of a call to `path`. */
export function streamEvents(path: string, answer: Json, parsed: unknown): string[] {
  const includeUsage =
    (parsed as { stream_options?: { include_usage?: unknown } } | null)?.stream_options?.include_usage ===
    true;
  switch (endpointOf(path)) {
    case 'chat':
      return chatEvents(answer, includeUsage);
    case 'completions':
      return completionEvents(answer, includeUsage);
    case 'responses':
      return responseEvents(answer);
    case 'messages':
      return messageEvents(answer);
    default:
      return [sse(answer), sse('[DONE]')];
  }
}

function chatEvents(answer: Json, includeUsage: boolean): string[] {
  const base = {
    id: answer.id,
    object: 'chat.completion.chunk',
    created: answer.created,
    model: answer.model,
    service_tier: answer.service_tier,
    system_fingerprint: answer.system_fingerprint,
  };
  const usage = includeUsage ? { usage: null } : {};
  const choice = (answer.choices as Json[])[0]!;
  const message = choice.message as Json;
  const out = [
    sse({
      ...base,
      choices: [
        {
          index: 0,
          delta: { role: 'assistant', content: '', refusal: null },
          logprobs: null,
          finish_reason: null,
        },
      ],
      ...usage,
    }),
  ];
  for (const piece of pieces(String(message.content ?? ''))) {
    out.push(
      sse({
        ...base,
        choices: [{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }],
        ...usage,
      }),
    );
  }
  out.push(
    sse({
      ...base,
      choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: choice.finish_reason }],
      ...usage,
    }),
  );
  if (includeUsage) out.push(sse({ ...base, choices: [], usage: answer.usage }));
  out.push(sse('[DONE]'));
  return out;
}

function completionEvents(answer: Json, includeUsage: boolean): string[] {
  const base = {
    id: answer.id,
    object: 'text_completion',
    created: answer.created,
    model: answer.model,
    system_fingerprint: answer.system_fingerprint,
  };
  const choice = (answer.choices as Json[])[0]!;
  const out = pieces(String(choice.text)).map((text) =>
    sse({ ...base, choices: [{ text, index: 0, logprobs: null, finish_reason: null }] }),
  );
  out.push(
    sse({ ...base, choices: [{ text: '', index: 0, logprobs: null, finish_reason: choice.finish_reason }] }),
  );
  if (includeUsage) out.push(sse({ ...base, choices: [], usage: answer.usage }));
  out.push(sse('[DONE]'));
  return out;
}

function responseEvents(answer: Json): string[] {
  const inProgress = { ...answer, status: 'in_progress', output: [], usage: null };
  const item = (answer.output as Json[])[0]!;
  const text = String(((item.content as Json[])[0] as Json).text);
  let seq = 0;
  const ev = (type: string, body: Json) => sse({ type, sequence_number: seq++, ...body }, type);
  const out = [
    ev('response.created', { response: inProgress }),
    ev('response.in_progress', { response: inProgress }),
    ev('response.output_item.added', {
      output_index: 0,
      item: { ...item, status: 'in_progress', content: [] },
    }),
    ev('response.content_part.added', {
      item_id: item.id,
      output_index: 0,
      content_index: 0,
      part: { type: 'output_text', text: '', annotations: [] },
    }),
  ];
  for (const delta of pieces(text)) {
    out.push(
      ev('response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta }),
    );
  }
  out.push(
    ev('response.output_text.done', { item_id: item.id, output_index: 0, content_index: 0, text }),
    ev('response.output_item.done', { output_index: 0, item }),
    ev('response.completed', { response: answer }),
  );
  return out;
}

function messageEvents(answer: Json): string[] {
  const usage = answer.usage as Json;
  const text = String(((answer.content as Json[])[0] as Json).text);
  const ev = (type: string, body: Json) => sse({ type, ...body }, type);
  const out = [
    ev('message_start', {
      message: {
        ...answer,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: 1 },
      },
    }),
    ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    ev('ping', {}),
  ];
  for (const piece of pieces(text)) {
    out.push(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: piece } }));
  }
  out.push(
    ev('content_block_stop', { index: 0 }),
    ev('message_delta', {
      delta: { stop_reason: answer.stop_reason, stop_sequence: null },
      usage: { output_tokens: usage.output_tokens },
    }),
    ev('message_stop', {}),
  );
  return out;
}
