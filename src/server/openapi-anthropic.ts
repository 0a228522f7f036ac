/**
 * The Message Batches part of /openapi.json (Anthropic's wire format; src/server/anthropic-objects.ts
 * holds the types). Merged into OPENAPI_DOCUMENT by openapi.ts.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });
const ok = (schema: unknown) => ({ description: 'OK', content: json(schema) });
const errors = {
  '400': { description: 'Invalid request', content: json(ref('AnthropicError')) },
  '401': { description: 'Missing or invalid API key', content: json(ref('AnthropicError')) },
  '404': { description: 'Not found (or owned by another key owner)', content: json(ref('AnthropicError')) },
};
const id = { name: 'message_batch_id', in: 'path', required: true, schema: { type: 'string' } };
const time = { type: 'string', format: 'date-time' };
const nullableTime = { type: ['string', 'null'], format: 'date-time' };
const security = [{ apiKey: [] }, { bearer: [] }];

export const ANTHROPIC_SECURITY_SCHEME = { type: 'apiKey', in: 'header', name: 'x-api-key' } as const;

export const ANTHROPIC_SCHEMAS = {
  AnthropicError: {
    type: 'object',
    required: ['type', 'error'],
    properties: {
      type: { const: 'error' },
      error: {
        type: 'object',
        required: ['type', 'message'],
        properties: {
          type: { type: 'string', example: 'invalid_request_error' },
          message: { type: 'string' },
        },
      },
      request_id: { type: ['string', 'null'] },
    },
  },
  MessageBatch: {
    type: 'object',
    required: [
      'id',
      'type',
      'processing_status',
      'request_counts',
      'created_at',
      'expires_at',
      'results_url',
    ],
    properties: {
      id: { type: 'string', example: 'msgbatch_0123456789abcdef0123456789abcdef' },
      type: { const: 'message_batch' },
      processing_status: { enum: ['in_progress', 'canceling', 'ended'] },
      request_counts: {
        type: 'object',
        properties: Object.fromEntries(
          ['processing', 'succeeded', 'errored', 'canceled', 'expired'].map((k) => [k, { type: 'integer' }]),
        ),
      },
      created_at: time,
      expires_at: nullableTime,
      ended_at: nullableTime,
      cancel_initiated_at: nullableTime,
      archived_at: nullableTime,
      results_url: { type: ['string', 'null'] },
    },
  },
} as const;

export const ANTHROPIC_PATHS = {
  '/v1/messages/batches': {
    post: {
      summary: 'Create a Message Batch (body streamed; ≤ 100,000 requests and 256 MB)',
      security,
      requestBody: {
        content: json({
          type: 'object',
          required: ['requests'],
          properties: {
            requests: {
              type: 'array',
              items: {
                type: 'object',
                required: ['custom_id', 'params'],
                properties: {
                  custom_id: { type: 'string', pattern: '^[a-zA-Z0-9_-]{1,64}$' },
                  params: { type: 'object', required: ['model', 'max_tokens', 'messages'] },
                },
              },
            },
          },
        }),
      },
      responses: { '200': ok(ref('MessageBatch')), '413': errors['400'], ...errors },
    },
    get: {
      summary: 'List Message Batches, newest first (after_id: older, before_id: newer)',
      security,
      parameters: [
        { name: 'before_id', in: 'query', schema: { type: 'string' } },
        { name: 'after_id', in: 'query', schema: { type: 'string' } },
        { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
      ],
      responses: { '200': ok({ type: 'object' }), ...errors },
    },
  },
  '/v1/messages/batches/{message_batch_id}': {
    get: {
      summary: 'Retrieve a Message Batch',
      security,
      parameters: [id],
      responses: { '200': ok(ref('MessageBatch')), ...errors },
    },
    delete: {
      summary: 'Delete an ended Message Batch (400 while processing)',
      security,
      parameters: [id],
      responses: { '200': ok({ type: 'object' }), ...errors },
    },
  },
  '/v1/messages/batches/{message_batch_id}/cancel': {
    post: {
      summary: 'Cancel a Message Batch',
      security,
      parameters: [id],
      responses: { '200': ok(ref('MessageBatch')), ...errors },
    },
  },
  '/v1/messages/batches/{message_batch_id}/results': {
    get: {
      summary: 'Results JSONL of an ended Message Batch (succeeded, errored, canceled, expired)',
      security,
      parameters: [id],
      responses: {
        '200': { description: 'JSONL', content: { 'application/binary': { schema: { type: 'string' } } } },
        ...errors,
      },
    },
  },
} as const;
