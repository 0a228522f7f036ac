import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, jsonl, startTestServer, type TestServer, upload } from './support.js';

/* completion_window values the Batch API accepts (issue 15 item 2): `fusillade serve` passes its
   --completion-windows (default 24h,1h); a 1h batch gets a deadline an hour away, nearer than a 24h
   one's, so it goes first within its owner's share (test/daemon/fair-share.test.ts). */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ completionWindows: ['24h', '1h'] });
});
afterAll(async () => {
  await t?.close();
});

describe('completion windows', () => {
  it('accepts the configured windows and refuses others with a 400 naming them', async () => {
    const file = await upload(t.alice, jsonl([chatLine(0)]));
    const base = { input_file_id: file.id, endpoint: '/v1/chat/completions' as const };
    const hour = await t.alice.batches.create({ ...base, completion_window: '1h' as '24h' });
    expect(hour.completion_window).toBe('1h');
    expect((hour.expires_at ?? 0) - hour.created_at).toBe(3600);
    const day = await t.alice.batches.create({ ...base, completion_window: '24h' });
    expect((day.expires_at ?? 0) - day.created_at).toBe(86_400);

    const err = await t.alice.batches.create({ ...base, completion_window: '30m' as '24h' }).then(
      () => undefined,
      (e) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect([err.status, err.code, err.param]).toEqual([
      400,
      'invalid_completion_window',
      'completion_window',
    ]);
    expect(err.message).toContain('"24h", "1h"');
  });
});
