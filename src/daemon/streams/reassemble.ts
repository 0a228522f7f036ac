import { parseSse, type SseEvent } from './sse.js';

/**
 * A streamed answer put back together as the one JSON object the same call returns without
 * `"stream": true`, so output files never hold raw server-sent events. Pure; the upstream client
 * calls it on a 2xx `text/event-stream` body (upstream-client.ts).
 *
 * - Chat completions: `chat.completion.chunk` deltas per choice (content, refusal, tool calls by
 *   index with their arguments concatenated, the legacy function_call, logprobs) → one
 *   `chat.completion`; the usage chunk (`stream_options.include_usage`) gives `usage`. Ends with
 *   `data: [DONE]`.
 * - Completions (legacy): `text_completion` chunks, texts concatenated per choice. Ends with [DONE].
 * - Responses: typed events ending in `response.completed` (or `response.incomplete` /
 *   `response.failed`), whose `response` is the whole answer, usage included.
 * - Anthropic messages: `message_start` (the message and its input usage), content blocks built
 *   from their deltas (text, tool input JSON, thinking and its signature, citations),
 *   `message_delta` (stop reason, output usage), `message_stop`.
 *
 * A stream without its ending (cut short, though the connection closed cleanly) is `incomplete`; an
 * `error` event is `error`: both are failed attempts, retried like a dropped connection, never half
 * a result.
 */

export type Reassembled =
  | { ok: true; body: string }
  | { ok: false; code: 'stream_incomplete' | 'stream_error' | 'stream_invalid'; message: string };

type Json = Record<string, unknown>;

const incomplete = (what: string): Reassembled => ({
  ok: false,
  code: 'stream_incomplete',
  message: `the upstream's stream ended before ${what}`,
});

function parse(data: string): Json | null {
  try {
    const v = JSON.parse(data);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null;
  } catch {
    return null;
  }
}

/**
 * Reassembles a whole event-stream body; null when it is no stream of the kinds above (an answer to
 * a template that is not an LLM call may be any event stream: it is then kept as it came).
 */
export function reassembleStream(text: string): Reassembled | null {
  const events = parseSse(text);
  if (events.length === 0) return incomplete('any event');
  const first = events.find((e) => e.data !== '[DONE]');
  const head = first ? parse(first.data) : null;
  const type = first?.event !== 'message' ? first?.event : (head?.type as string | undefined);
  if (type === 'message_start' || type === 'ping' || head?.type === 'message_start') return anthropic(events);
  if (typeof type === 'string' && type.startsWith('response.')) return responses(events);
  if (head?.object === 'chat.completion.chunk' || head?.object === 'text_completion' || head?.choices) {
    return chunks(events);
  }
  // A stream that fails before its first answer event carries only the error.
  const error = events.find((e) => e.event === 'error' || parse(e.data)?.error !== undefined);
  if (error) return streamError(error.data);
  return null;
}

function streamError(data: string): Reassembled {
  const parsed = parse(data);
  const err = (parsed?.error ?? parsed) as Json | null;
  const message = typeof err?.message === 'string' ? err.message : data.slice(0, 300);
  return { ok: false, code: 'stream_error', message: `the upstream's stream failed: ${message}` };
}

// ---- chat completions and completions ----------------------------------------------------------

interface ToolCall {
  index: number;
  id?: string;
  type?: string;
  function: { name: string; arguments: string };
}

interface Choice {
  index: number;
  role?: string;
  content: string | null;
  text: string;
  refusal: string | null;
  toolCalls: Map<number, ToolCall>;
  functionCall: { name: string; arguments: string } | null;
  logprobs: Json | null;
  finishReason: string | null;
}

function chunks(events: SseEvent[]): Reassembled {
  const choices = new Map<number, Choice>();
  let base: Json | null = null;
  let usage: unknown = null;
  let done = false;
  let textCompletion = false;
  for (const e of events) {
    if (e.data === '[DONE]') {
      done = true;
      break;
    }
    const chunk = parse(e.data);
    if (!chunk) return { ok: false, code: 'stream_invalid', message: 'a stream chunk is not a JSON object' };
    if (chunk.error !== undefined) return streamError(e.data);
    base ??= chunk;
    if (chunk.object === 'text_completion') textCompletion = true;
    if (chunk.usage) usage = chunk.usage;
    for (const c of (chunk.choices as Json[] | undefined) ?? []) {
      const index = typeof c.index === 'number' ? c.index : 0;
      let choice = choices.get(index);
      if (!choice) {
        choice = {
          index,
          content: null,
          text: '',
          refusal: null,
          toolCalls: new Map(),
          functionCall: null,
          logprobs: null,
          finishReason: null,
        };
        choices.set(index, choice);
      }
      applyChoice(choice, c);
    }
  }
  const all = [...choices.values()];
  if (!done && (all.length === 0 || all.some((c) => c.finishReason === null))) return incomplete('[DONE]');
  if (!base) return incomplete('its first chunk');
  const sorted = all.sort((a, b) => a.index - b.index);
  const out: Json = {
    id: base.id,
    object: textCompletion ? 'text_completion' : 'chat.completion',
    created: base.created,
    model: base.model,
    choices: sorted.map((c) => (textCompletion ? textChoice(c) : chatChoice(c))),
  };
  if (usage) out.usage = usage;
  if (base.service_tier !== undefined) out.service_tier = base.service_tier;
  if (base.system_fingerprint !== undefined) out.system_fingerprint = base.system_fingerprint;
  return { ok: true, body: JSON.stringify(out) };
}

function applyChoice(choice: Choice, c: Json): void {
  if (typeof c.finish_reason === 'string') choice.finishReason = c.finish_reason;
  if (typeof c.text === 'string') choice.text += c.text;
  const lp = c.logprobs as Json | null | undefined;
  if (lp && typeof lp === 'object') {
    choice.logprobs ??= {};
    for (const [k, v] of Object.entries(lp)) {
      const prev = choice.logprobs[k];
      choice.logprobs[k] = Array.isArray(prev) && Array.isArray(v) ? [...prev, ...v] : v;
    }
  }
  const d = c.delta as Json | undefined;
  if (!d) return;
  if (typeof d.role === 'string') choice.role = d.role;
  if (typeof d.content === 'string') choice.content = (choice.content ?? '') + d.content;
  if (typeof d.refusal === 'string') choice.refusal = (choice.refusal ?? '') + d.refusal;
  const fc = d.function_call as Json | undefined;
  if (fc) {
    choice.functionCall ??= { name: '', arguments: '' };
    if (typeof fc.name === 'string') choice.functionCall.name += fc.name;
    if (typeof fc.arguments === 'string') choice.functionCall.arguments += fc.arguments;
  }
  for (const t of (d.tool_calls as Json[] | undefined) ?? []) {
    const index = typeof t.index === 'number' ? t.index : choice.toolCalls.size;
    let call = choice.toolCalls.get(index);
    if (!call) {
      call = { index, function: { name: '', arguments: '' } };
      choice.toolCalls.set(index, call);
    }
    if (typeof t.id === 'string') call.id = t.id;
    if (typeof t.type === 'string') call.type = t.type;
    const f = t.function as Json | undefined;
    if (typeof f?.name === 'string') call.function.name += f.name;
    if (typeof f?.arguments === 'string') call.function.arguments += f.arguments;
  }
}

function chatChoice(c: Choice): Json {
  const message: Json = { role: c.role ?? 'assistant', content: c.content, refusal: c.refusal };
  if (c.toolCalls.size > 0) {
    message.tool_calls = [...c.toolCalls.values()]
      .sort((a, b) => a.index - b.index)
      .map((t) => ({ id: t.id, type: t.type ?? 'function', function: t.function }));
  }
  if (c.functionCall) message.function_call = c.functionCall;
  return { index: c.index, message, logprobs: c.logprobs, finish_reason: c.finishReason };
}

function textChoice(c: Choice): Json {
  return { text: c.text, index: c.index, logprobs: c.logprobs, finish_reason: c.finishReason };
}

// ---- responses ---------------------------------------------------------------------------------

const RESPONSE_ENDS = new Set(['response.completed', 'response.incomplete', 'response.failed']);

function responses(events: SseEvent[]): Reassembled {
  for (const e of events) {
    const data = parse(e.data);
    const type = e.event !== 'message' ? e.event : (data?.type as string | undefined);
    if (type === 'error') return streamError(e.data);
    if (type && RESPONSE_ENDS.has(type)) {
      const response = data?.response;
      if (!response || typeof response !== 'object') {
        return { ok: false, code: 'stream_invalid', message: `${type} carries no response` };
      }
      return { ok: true, body: JSON.stringify(response) };
    }
  }
  return incomplete('response.completed');
}

// ---- Anthropic messages ------------------------------------------------------------------------

interface Block {
  block: Json;
  /** Tool input as streamed JSON text (input_json_delta). */
  json: string | null;
}

function anthropic(events: SseEvent[]): Reassembled {
  let message: Json | null = null;
  const blocks = new Map<number, Block>();
  let stopped = false;
  for (const e of events) {
    const data = parse(e.data);
    const type = e.event !== 'message' ? e.event : (data?.type as string | undefined);
    if (type === 'error') return streamError(e.data);
    if (!data) continue;
    switch (type) {
      case 'message_start':
        message = { ...((data.message as Json) ?? {}) };
        message.usage = { ...((message.usage as Json) ?? {}) };
        break;
      case 'content_block_start': {
        const index = data.index as number;
        const block = { ...((data.content_block as Json) ?? {}) };
        blocks.set(index, {
          block,
          json: block.type === 'tool_use' || block.type === 'server_tool_use' ? '' : null,
        });
        break;
      }
      case 'content_block_delta': {
        const b = blocks.get(data.index as number);
        const d = data.delta as Json | undefined;
        if (!b || !d) break;
        if (d.type === 'text_delta') b.block.text = String(b.block.text ?? '') + String(d.text ?? '');
        else if (d.type === 'input_json_delta') b.json = (b.json ?? '') + String(d.partial_json ?? '');
        else if (d.type === 'thinking_delta')
          b.block.thinking = String(b.block.thinking ?? '') + String(d.thinking ?? '');
        else if (d.type === 'signature_delta') b.block.signature = String(d.signature ?? '');
        else if (d.type === 'citations_delta') {
          b.block.citations = [...((b.block.citations as unknown[]) ?? []), d.citation];
        }
        break;
      }
      case 'content_block_stop': {
        const b = blocks.get(data.index as number);
        if (b && b.json !== null) {
          try {
            b.block.input = b.json === '' ? {} : JSON.parse(b.json);
          } catch {
            return {
              ok: false,
              code: 'stream_invalid',
              message: 'a tool input in the stream is not valid JSON',
            };
          }
          b.json = null;
        }
        break;
      }
      case 'message_delta': {
        if (!message) break;
        const d = (data.delta as Json) ?? {};
        if ('stop_reason' in d) message.stop_reason = d.stop_reason;
        if ('stop_sequence' in d) message.stop_sequence = d.stop_sequence;
        if (data.usage && typeof data.usage === 'object') {
          // Counts in message_delta are cumulative: they replace message_start's.
          message.usage = { ...(message.usage as Json), ...(data.usage as Json) };
        }
        break;
      }
      case 'message_stop':
        stopped = true;
        break;
    }
    if (stopped) break;
  }
  if (!message) return incomplete('message_start');
  if (!stopped) return incomplete('message_stop');
  message.content = [...blocks.entries()].sort(([a], [b]) => a - b).map(([, b]) => b.block);
  return { ok: true, body: JSON.stringify(message) };
}

/**
 * Whether a 2xx body is an event stream: it starts with an SSE field (`data:`, `event:`, `id:`,
 * `retry:`) or a comment, which no JSON body does; the caller confirms with the Content-Type.
 * One or two character checks on the hot path.
 */
export function looksLikeEventStream(body: string): boolean {
  const c = body.charCodeAt(0);
  if (c !== 0x64 && c !== 0x65 && c !== 0x3a && c !== 0x69 && c !== 0x72) return false;
  return (
    c === 0x3a ||
    body.startsWith('data:') ||
    body.startsWith('event:') ||
    body.startsWith('id:') ||
    body.startsWith('retry:')
  );
}

const USAGE_PATHS = ['/chat/completions', '/completions'];

/**
 * The body to send for a streamed chat completion or completion: OpenAI reports a stream's usage
 * only when asked (`stream_options.include_usage`), so it is asked for unless the line says
 * otherwise; every other body is sent as given. A body that does not mention "stream" is returned
 * at the cost of one substring search.
 */
export function streamRequestBody(path: string, body: string): string {
  if (!body.includes('"stream"') || !USAGE_PATHS.some((p) => path.endsWith(p))) return body;
  let parsed: Json;
  try {
    parsed = JSON.parse(body) as Json;
  } catch {
    return body;
  }
  if (parsed === null || typeof parsed !== 'object' || parsed.stream !== true) return body;
  const options = parsed.stream_options;
  if (options !== undefined && options !== null && typeof options !== 'object') return body;
  if (options && 'include_usage' in (options as Json)) return body;
  parsed.stream_options = { ...((options as Json | null) ?? {}), include_usage: true };
  return JSON.stringify(parsed);
}

/**
 * What the upstream client makes of a 2xx body: null when it is not an event stream (the body is
 * kept as it is), else the reassembled answer or why it is not one. `contentType` is read only for
 * bodies that look like a stream.
 */
export function reassembleIfStream(body: string, contentType: () => string | null): Reassembled | null {
  if (!looksLikeEventStream(body)) return null;
  if (!(contentType() ?? '').toLowerCase().includes('text/event-stream')) return null;
  return reassembleStream(body);
}
