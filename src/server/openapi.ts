import { BATCH_ENDPOINTS } from '../domain/batch-input.js';
import { BATCH_STATUSES } from '../domain/batch-lifecycle.js';
import { ANTHROPIC_PATHS, ANTHROPIC_SCHEMAS, ANTHROPIC_SECURITY_SCHEME } from './openapi-anthropic.js';

/** The OpenAPI 3.1 description served at /openapi.json (the OpenAI Files and Batches subset). */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });
const ok = (schema: unknown, description = 'OK') => ({ description, content: json(schema) });
const errors = {
  '400': { description: 'Invalid request', content: json(ref('Error')) },
  '401': { description: 'Missing or invalid API key', content: json(ref('Error')) },
  '404': { description: 'Not found (or owned by another key owner)', content: json(ref('Error')) },
  '503': { description: 'Database unavailable', content: json(ref('Error')) },
};
const idParam = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string' } });
const nullableInt = { type: ['integer', 'null'] };

export const OPENAPI_DOCUMENT = {
  openapi: '3.1.0',
  info: {
    title: 'fusillade Batch API',
    version: '1',
    description:
      "OpenAI-compatible Files and Batches API, and Anthropic's Message Batches API under /v1/messages/batches. " +
      'Every /v1 route needs `Authorization: Bearer <key>` (or `x-api-key: <key>`). ' +
      'Upload limits: 50,000 lines and 200 MB per file by default.',
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, apiKey: ANTHROPIC_SECURITY_SCHEME },
    schemas: {
      ...ANTHROPIC_SCHEMAS,
      Error: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['message', 'type'],
            properties: {
              message: { type: 'string' },
              type: { type: 'string' },
              param: { type: ['string', 'null'] },
              code: { type: ['string', 'null'] },
              line: { type: 'integer', description: 'The input line of a validation error' },
            },
          },
        },
      },
      File: {
        type: 'object',
        required: ['id', 'object', 'bytes', 'created_at', 'filename', 'purpose', 'status'],
        properties: {
          id: { type: 'string', example: 'file-0123456789abcdef0123456789abcdef' },
          object: { const: 'file' },
          bytes: { type: 'integer' },
          created_at: { type: 'integer' },
          expires_at: nullableInt,
          filename: { type: 'string' },
          purpose: { enum: ['batch', 'batch_output', 'batch_error'] },
          status: { const: 'processed' },
        },
      },
      Batch: {
        type: 'object',
        required: ['id', 'object', 'endpoint', 'input_file_id', 'completion_window', 'status', 'created_at'],
        properties: {
          id: { type: 'string', example: 'batch_0123456789abcdef0123456789abcdef' },
          object: { const: 'batch' },
          endpoint: { enum: [...BATCH_ENDPOINTS] },
          errors: { type: ['object', 'null'] },
          input_file_id: { type: 'string' },
          completion_window: { type: 'string' },
          status: {
            enum: [...BATCH_STATUSES],
          },
          output_file_id: { type: ['string', 'null'] },
          error_file_id: { type: ['string', 'null'] },
          created_at: { type: 'integer' },
          in_progress_at: nullableInt,
          expires_at: nullableInt,
          finalizing_at: nullableInt,
          completed_at: nullableInt,
          failed_at: nullableInt,
          expired_at: nullableInt,
          cancelling_at: nullableInt,
          cancelled_at: nullableInt,
          request_counts: {
            type: 'object',
            properties: {
              total: { type: 'integer' },
              completed: { type: 'integer' },
              failed: { type: 'integer' },
            },
          },
          metadata: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
          usage: { type: 'object' },
          upstreams: {
            description:
              'fusillade: where the requests go, recorded when the batch was created (never a key). ' +
              'While `waiting`, no live daemon can send them and `errors` holds no_daemon_for_upstream.',
            type: 'array',
            items: {
              type: 'object',
              properties: {
                upstream: { type: 'string', description: 'base URL without credentials, or "mock"' },
                credential: { enum: ['none', 'key', 'template', 'daemon'] },
                key_fingerprint: { type: ['string', 'null'], example: 'sha256:0123456789abcdef' },
                models: { type: 'array', items: { type: 'string' } },
                daemons: { type: 'integer', description: 'live daemons that can send these requests' },
                waiting: { type: 'boolean' },
              },
            },
          },
        },
      },
      List: {
        type: 'object',
        properties: {
          object: { const: 'list' },
          data: { type: 'array' },
          first_id: { type: ['string', 'null'] },
          last_id: { type: ['string', 'null'] },
          has_more: { type: 'boolean' },
        },
      },
    },
  },
  security: [{ bearer: [] }],
  paths: {
    ...ANTHROPIC_PATHS,
    '/v1/files': {
      post: {
        summary: 'Upload a JSONL batch input file (streamed and validated line by line)',
        requestBody: {
          content: {
            'multipart/form-data': {
              schema: {
                type: 'object',
                required: ['file', 'purpose'],
                properties: { file: { type: 'string', format: 'binary' }, purpose: { const: 'batch' } },
              },
            },
          },
        },
        responses: { '200': ok(ref('File')), '413': errors['400'], ...errors },
      },
      get: {
        summary: 'List files',
        parameters: [
          { name: 'purpose', in: 'query', schema: { type: 'string' } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10000 } },
          { name: 'order', in: 'query', schema: { enum: ['asc', 'desc'] } },
          { name: 'after', in: 'query', schema: { type: 'string' } },
        ],
        responses: { '200': ok(ref('List')), ...errors },
      },
    },
    '/v1/files/{file_id}': {
      get: {
        summary: 'Retrieve a file',
        parameters: [idParam('file_id')],
        responses: { '200': ok(ref('File')), ...errors },
      },
      delete: {
        summary: 'Delete a file',
        parameters: [idParam('file_id')],
        responses: { '200': ok({ type: 'object' }), ...errors },
      },
    },
    '/v1/files/{file_id}/content': {
      get: {
        summary: 'Download a file: input JSONL, or output / error JSONL streamed from the requests',
        parameters: [idParam('file_id')],
        responses: {
          '200': {
            description: 'JSONL',
            content: { 'application/octet-stream': { schema: { type: 'string' } } },
          },
          ...errors,
        },
      },
    },
    '/v1/batches': {
      post: {
        summary: 'Create a batch (honours the Idempotency-Key header)',
        parameters: [{ name: 'Idempotency-Key', in: 'header', schema: { type: 'string' } }],
        requestBody: {
          content: json({
            type: 'object',
            required: ['input_file_id', 'endpoint', 'completion_window'],
            properties: {
              input_file_id: { type: 'string' },
              endpoint: { enum: [...BATCH_ENDPOINTS] },
              completion_window: { type: 'string', example: '24h' },
              metadata: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
            },
          }),
        },
        responses: { '200': ok(ref('Batch')), ...errors },
      },
      get: {
        summary: 'List batches, newest first',
        parameters: [
          { name: 'after', in: 'query', schema: { type: 'string' } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100 } },
        ],
        responses: { '200': ok(ref('List')), ...errors },
      },
    },
    '/v1/batches/{batch_id}': {
      get: {
        summary: 'Retrieve a batch',
        parameters: [idParam('batch_id')],
        responses: { '200': ok(ref('Batch')), ...errors },
      },
    },
    '/v1/batches/{batch_id}/cancel': {
      post: {
        summary: 'Cancel a batch (400 if it has already ended)',
        parameters: [idParam('batch_id')],
        responses: { '200': ok(ref('Batch')), ...errors },
      },
    },
    '/healthz': {
      get: {
        summary: 'Liveness and database reachability',
        security: [],
        responses: { '200': ok({ type: 'object' }) },
      },
    },
    '/metrics': {
      get: { summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'text' } } },
    },
  },
} as const;
