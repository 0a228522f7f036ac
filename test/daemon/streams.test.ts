import { describe, expect, it } from 'vitest';
import {
  reassembleIfStream,
  reassembleStream,
  streamRequestBody,
} from '../../src/daemon/streams/reassemble.js';
import { parseSse } from '../../src/daemon/streams/sse.js';
import { okObject } from '../../src/mock-upstream/responses.js';
import { streamEvents } from '../../src/mock-upstream/streams.js';

const sse = (data: unknown, event?: string) =>
  `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

function ok(text: string): Record<string, unknown> {
  const r = reassembleStream(text);
  if (!r?.ok) throw new Error(`not reassembled: ${JSON.stringify(r)}`);
  return JSON.parse(r.body);
}

describe('server-sent events', () => {
  it('parses fields, comments, multi-line data and every line ending; drops an unterminated event', () => {
    const text =
      ': comment\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata:x\rid: 9\r\rdata: {"y":1}\n\ndata: cut';
    expect(parseSse(text)).toEqual([
      { event: 'a', data: '1\n2' },
      { event: 'message', data: 'x' },
      { event: 'message', data: '{"y":1}' },
    ]);
  });
});

describe('chat completion streams', () => {
  const base = {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 7,
    model: 'm',
    system_fingerprint: 'fp',
  };
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    sse({ ...base, choices, ...extra });

  it('joins content, tool call arguments and choices, and takes the usage chunk', () => {
    const text = [
      chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]),
      chunk([{ index: 1, delta: { role: 'assistant', content: 'B' }, finish_reason: null }]),
      chunk([{ index: 0, delta: { content: 'Hel' }, finish_reason: null }]),
      chunk([{ index: 0, delta: { content: 'lo' }, finish_reason: null }]),
      chunk([
        {
          index: 1,
          delta: {
            tool_calls: [
              { index: 0, id: 'call_1', type: 'function', function: { name: 'get', arguments: '{"ci' } },
            ],
          },
        },
      ]),
      chunk([{ index: 1, delta: { tool_calls: [{ index: 0, function: { arguments: 'ty":"Oslo"}' } }] } }]),
      chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]),
      chunk([{ index: 1, delta: {}, finish_reason: 'tool_calls' }]),
      chunk([], { usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } }),
      sse('[DONE]'),
    ].join('');
    expect(ok(text)).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 7,
      model: 'm',
      system_fingerprint: 'fp',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'Hello', refusal: null },
          logprobs: null,
          finish_reason: 'stop',
        },
        {
          index: 1,
          message: {
            role: 'assistant',
            content: 'B',
            refusal: null,
            tool_calls: [
              { id: 'call_1', type: 'function', function: { name: 'get', arguments: '{"city":"Oslo"}' } },
            ],
          },
          logprobs: null,
          finish_reason: 'tool_calls',
        },
      ],
      usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
    });
  });

  it('is incomplete without [DONE] and a finish reason, and failed on an error chunk', () => {
    const start = chunk([{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }]);
    expect(reassembleStream(start)).toMatchObject({ ok: false, code: 'stream_incomplete' });
    expect(reassembleStream(start + sse({ error: { message: 'overloaded', type: 'server_error' } }))).toEqual(
      {
        ok: false,
        code: 'stream_error',
        message: "the upstream's stream failed: overloaded",
      },
    );
    // A server that ends every choice but sends no [DONE] is complete.
    const ended = start + chunk([{ index: 0, delta: {}, finish_reason: 'length' }]);
    expect(ok(ended)).toMatchObject({ choices: [{ message: { content: 'Hi' }, finish_reason: 'length' }] });
  });

  it('joins legacy completion texts', () => {
    const c = { id: 'cmpl-1', object: 'text_completion', created: 1, model: 'i' };
    const text =
      sse({ ...c, choices: [{ text: 'once ', index: 0, logprobs: null, finish_reason: null }] }) +
      sse({ ...c, choices: [{ text: 'upon', index: 0, logprobs: null, finish_reason: 'stop' }] }) +
      sse({ ...c, choices: [], usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 } }) +
      sse('[DONE]');
    expect(ok(text)).toEqual({
      id: 'cmpl-1',
      object: 'text_completion',
      created: 1,
      model: 'i',
      choices: [{ text: 'once upon', index: 0, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 },
    });
  });
});

describe('Responses API streams', () => {
  it('take the whole response from response.completed', () => {
    const response = { id: 'resp_1', object: 'response', status: 'completed', usage: { input_tokens: 3 } };
    const text =
      sse(
        { type: 'response.created', response: { ...response, status: 'in_progress' } },
        'response.created',
      ) +
      sse({ type: 'response.output_text.delta', delta: 'x' }, 'response.output_text.delta') +
      sse({ type: 'response.completed', response }, 'response.completed');
    expect(ok(text)).toEqual(response);
    // Without event names too (the type is in the data).
    expect(ok(text.replace(/event: [^\n]+\n/g, ''))).toEqual(response);
  });

  it('is incomplete without its end, failed on an error event', () => {
    const created = sse({ type: 'response.created', response: { id: 'r' } }, 'response.created');
    expect(reassembleStream(created)).toMatchObject({ ok: false, code: 'stream_incomplete' });
    expect(
      reassembleStream(created + sse({ type: 'error', code: 'server_error', message: 'boom' }, 'error')),
    ).toMatchObject({ ok: false, code: 'stream_error', message: expect.stringContaining('boom') });
  });
});

describe('Anthropic message streams', () => {
  const ev = (type: string, body: Record<string, unknown> = {}) => sse({ type, ...body }, type);
  const start = ev('message_start', {
    message: {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 25, cache_read_input_tokens: 10, output_tokens: 1 },
    },
  });

  it('builds text, thinking and tool-use blocks and the final usage', () => {
    const text = [
      start,
      ev('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '' } }),
      ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'hmm ' } }),
      ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'ok' } }),
      ev('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: 'sig' } }),
      ev('content_block_stop', { index: 0 }),
      ev('ping'),
      ev('content_block_start', { index: 1, content_block: { type: 'text', text: '' } }),
      ev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: 'Let me ' } }),
      ev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: 'check.' } }),
      ev('content_block_stop', { index: 1 }),
      ev('content_block_start', {
        index: 2,
        content_block: { type: 'tool_use', id: 'tu_1', name: 'get', input: {} },
      }),
      ev('content_block_delta', { index: 2, delta: { type: 'input_json_delta', partial_json: '{"city": ' } }),
      ev('content_block_delta', { index: 2, delta: { type: 'input_json_delta', partial_json: '"Oslo"}' } }),
      ev('content_block_stop', { index: 2 }),
      ev('message_delta', {
        delta: { stop_reason: 'tool_use', stop_sequence: null },
        usage: { output_tokens: 42 },
      }),
      ev('message_stop'),
    ].join('');
    expect(ok(text)).toEqual({
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude',
      content: [
        { type: 'thinking', thinking: 'hmm ok', signature: 'sig' },
        { type: 'text', text: 'Let me check.' },
        { type: 'tool_use', id: 'tu_1', name: 'get', input: { city: 'Oslo' } },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 25, cache_read_input_tokens: 10, output_tokens: 42 },
    });
  });

  it('is incomplete without message_stop, failed on an error event', () => {
    expect(reassembleStream(start)).toMatchObject({ ok: false, code: 'stream_incomplete' });
    const overloaded = ev('error', { error: { type: 'overloaded_error', message: 'Overloaded' } });
    expect(reassembleStream(start + overloaded)).toMatchObject({ ok: false, code: 'stream_error' });
  });
});

describe('the mock upstream streams what it answers', () => {
  for (const path of ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/v1/messages']) {
    it(`${path}: reassembled, the stream is the answer`, () => {
      const parsed = { model: 'm', stream: true, stream_options: { include_usage: true } };
      const answer = okObject(path, 'm', parsed);
      const back = ok(streamEvents(path, answer, parsed).join(''));
      expect(back.usage).toEqual(answer.usage);
      expect(back.id).toEqual(answer.id);
      if (path === '/v1/chat/completions') {
        expect(back).toMatchObject({
          object: 'chat.completion',
          choices: [{ message: { content: 'mock reply' } }],
        });
      } else if (path === '/v1/completions') {
        expect(back).toMatchObject({ object: 'text_completion', choices: [{ text: 'mock completion' }] });
      } else {
        expect(back).toEqual(answer);
      }
    });
  }
});

describe('the upstream client side', () => {
  it('asks a streamed chat completion or completion for its usage, and leaves everything else', () => {
    const body = '{"model":"m","stream":true,"messages":[]}';
    expect(JSON.parse(streamRequestBody('/v1/chat/completions', body))).toEqual({
      model: 'm',
      stream: true,
      messages: [],
      stream_options: { include_usage: true },
    });
    const kept = '{"model":"m","stream":true,"stream_options":{"include_usage":false}}';
    expect(streamRequestBody('/v1/chat/completions', kept)).toBe(kept);
    const other = '{"model":"m","stream":true,"stream_options":{"x":1}}';
    expect(JSON.parse(streamRequestBody('/v1/completions', other)).stream_options).toEqual({
      x: 1,
      include_usage: true,
    });
    for (const [path, b] of [
      ['/v1/chat/completions', '{"model":"m","stream":false}'],
      ['/v1/chat/completions', '{"model":"m","messages":[]}'],
      ['/v1/responses', '{"model":"m","stream":true}'],
      ['/v1/messages', '{"model":"m","stream":true}'],
    ] as const) {
      expect(streamRequestBody(path, b)).toBe(b);
    }
  });

  it('reassembles only 2xx bodies that are event streams by their bytes and their Content-Type', () => {
    const stream = sse({ type: 'response.completed', response: { id: 'r' } }, 'response.completed');
    expect(reassembleIfStream(stream, () => 'text/event-stream; charset=utf-8')).toEqual({
      ok: true,
      body: '{"id":"r"}',
    });
    expect(reassembleIfStream(stream, () => 'text/plain')).toBeNull();
    expect(reassembleIfStream('{"data: x":1}', () => 'text/event-stream')).toBeNull();
    // An event stream of no known kind (a template that is not an LLM call) is kept as it came.
    expect(reassembleIfStream('data: tick\n\n', () => 'text/event-stream')).toBeNull();
  });
});
