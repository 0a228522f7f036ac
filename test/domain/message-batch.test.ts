import { describe, expect, it } from 'vitest';
import {
  addUpstreamAuth,
  anthropicErrorType,
  messageBatchCounts,
  processingStatus,
  validateMessageBatchRequest,
} from '../../src/domain/message-batch.js';

const at = (iso: string) => new Date(iso);
const status = { completedRequests: 5, failedRequests: 2, canceledRequests: 3 };

describe('message batches in Anthropic terms', () => {
  it('processing_status follows the batch row', () => {
    expect(processingStatus({ finishedAt: null, cancellingAt: null })).toBe('in_progress');
    expect(processingStatus({ finishedAt: null, cancellingAt: at('2026-01-01T00:00:00Z') })).toBe(
      'canceling',
    );
    expect(processingStatus({ finishedAt: at('2026-01-01T00:00:00Z'), cancellingAt: null })).toBe('ended');
  });

  it('counts stay processing until the batch ends; canceled requests of an expired batch are expired', () => {
    const live = { finishedAt: null, status: 'in_progress' as const, totalRequests: 10 };
    expect(messageBatchCounts(live, status)).toEqual({
      processing: 10,
      succeeded: 0,
      errored: 0,
      canceled: 0,
      expired: 0,
    });
    const done = { finishedAt: at('2026-01-01T00:00:00Z'), totalRequests: 10 };
    expect(messageBatchCounts({ ...done, status: 'cancelled' }, status)).toEqual({
      processing: 0,
      succeeded: 5,
      errored: 2,
      canceled: 3,
      expired: 0,
    });
    expect(messageBatchCounts({ ...done, status: 'expired' }, status)).toMatchObject({
      canceled: 0,
      expired: 3,
    });
  });

  it('error types by status', () => {
    expect([400, 401, 403, 404, 413, 429, 500, 503, 529, 418].map(anthropicErrorType)).toEqual([
      'invalid_request_error',
      'authentication_error',
      'permission_error',
      'not_found_error',
      'request_too_large',
      'rate_limit_error',
      'api_error',
      'api_error',
      'overloaded_error',
      'invalid_request_error',
    ]);
  });

  it('the upstream key goes in x-api-key with anthropic-version for /v1/messages, as Bearer elsewhere', () => {
    const anthropic: Record<string, string> = {};
    addUpstreamAuth(anthropic, '/v1/messages', 'sk-up');
    expect(anthropic).toEqual({ 'x-api-key': 'sk-up', 'anthropic-version': '2023-06-01' });
    const openai: Record<string, string> = {};
    addUpstreamAuth(openai, '/v1/chat/completions', 'sk-up');
    expect(openai).toEqual({ authorization: 'Bearer sk-up' });
    const none: Record<string, string> = {};
    addUpstreamAuth(none, '/v1/chat/completions', '');
    expect(none).toEqual({});
  });

  it('validates a request as Anthropic does and keeps custom_ids unique', () => {
    const seen = new Set<string>();
    const params = { model: 'claude', max_tokens: 8, messages: [] };
    expect(validateMessageBatchRequest({ custom_id: 'a_B-9', params }, 0, seen)).toEqual({
      customId: 'a_B-9',
      model: 'claude',
      body: JSON.stringify(params),
    });
    const bad: [unknown, RegExp][] = [
      [{ custom_id: 'a_B-9', params }, /requests\.1\.custom_id: duplicate/],
      [{ custom_id: '', params }, /requests\.1\.custom_id: String should match/],
      [{ custom_id: 'x', params: { ...params, max_tokens: 0 } }, /requests\.1\.params\.max_tokens/],
      [{ custom_id: 'y', params: { ...params, stream: true } }, /requests\.1\.params\.stream/],
      [{ custom_id: 'z', params: { max_tokens: 1, messages: [] } }, /requests\.1\.params\.model/],
      ['text', /requests\.1: must be an object/],
    ];
    for (const [item, message] of bad)
      expect(() => validateMessageBatchRequest(item, 1, seen)).toThrow(message);
  });
});
