import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canonicalJson,
  promptPrefix,
  promptPrefixHash,
  promptPrefixHashOf,
} from '../../src/domain/prompt-prefix.js';
import { type RequestTemplateInput, validateTemplate } from '../../src/domain/templates.js';
import { cacheablePrefix, PrefixCache } from '../../src/mock-upstream/prefix-cache.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { createBatch, waitForBatchEnd } from '../support/mock-upstream.js';

/*
 * Issue 15 item 3: requests sharing a prompt prefix are claimed and sent together. Counted at a
 * mock whose prompt cache holds 4 prefixes (LRU): no timing is measured or asserted.
 */

const chat = (system: string | null, ...user: string[]) =>
  JSON.stringify({
    model: 'm',
    messages: [
      ...(system === null ? [] : [{ role: 'system', content: system }]),
      ...user.map((content) => ({ role: 'user', content })),
    ],
  });

describe('prompt prefix (pure)', () => {
  it('is the system prompt and first message, canonical; null when nothing precedes the question', () => {
    expect(promptPrefixHash(chat('be brief', 'a'))).toBe(promptPrefixHash(chat('be brief', 'b')));
    expect(promptPrefixHash(chat('be brief', 'a'))).not.toBe(promptPrefixHash(chat('be long', 'a')));
    // Formatting and key order do not split a group.
    const spaced =
      '{ "messages" : [ {"content":"be brief", "role":"system"}, {"role":"user","content":"x"} ], "model":"m" }';
    expect(promptPrefixHash(spaced)).toBe(promptPrefixHash(chat('be brief', 'y')));
    expect(promptPrefix(chat(null, 'only a question'))).toBeNull();
    expect(promptPrefix(JSON.stringify({ model: 'e', input: 'embed me' }))).toBeNull();
    // A shared first message (a document, a few-shot example) before the question is a prefix.
    expect(promptPrefixHash(chat(null, 'doc', 'q1'))).toBe(promptPrefixHash(chat(null, 'doc', 'q2')));
    // Anthropic's system and tools members.
    const anthropic = (system: string, q: string) =>
      JSON.stringify({
        model: 'c',
        system,
        tools: [{ name: 't' }],
        messages: [{ role: 'user', content: q }],
      });
    expect(promptPrefixHash(anthropic('s', 'a'))).toBe(promptPrefixHash(anthropic('s', 'b')));
    expect(promptPrefixHash(anthropic('s', 'a'))).toMatch(/^-?\d+$/);
    expect(canonicalJson({ b: [1, { d: null, c: 'x' }], a: true })).toBe(
      '{"a":true,"b":[1,{"c":"x","d":null}]}',
    );
  });

  it('hashes the value validateTemplate parsed as it hashes the body (the store parses each body once)', () => {
    const base = {
      endpoint: 'http://127.0.0.1:9',
      method: 'POST',
      path: '/v1/chat/completions',
      model: 'm',
      apiKey: '',
    };
    const bodies = [
      chat('be brief', 'a'),
      chat(null, 'only a question'),
      chat(null, 'doc', 'q'),
      '{ "messages" : [ {"content":"be brief", "role":"system"}, {"role":"user","content":"x"} ], "model":"m" }',
      JSON.stringify({
        model: 'c',
        system: 's',
        tools: [{ name: 't' }],
        messages: [{ role: 'user', content: 'q' }],
      }),
      JSON.stringify({ model: 'e', input: ['a', 'b'] }),
    ];
    for (const body of bodies) {
      const parsed: { body?: unknown } = {};
      expect(validateTemplate({ ...base, body }, 0, parsed)).toEqual([]);
      expect(parsed.body).toEqual(JSON.parse(body));
      expect(promptPrefixHashOf(parsed.body)).toBe(promptPrefixHash(body));
    }
    // A body not parsed (a GET's empty body, a bad body) is left out.
    const none: { body?: unknown } = {};
    expect(validateTemplate({ ...base, method: 'GET', body: '' }, 0, none)).toEqual([]);
    expect(validateTemplate({ ...base, body: '{not json' }, 0, none)).toHaveLength(1);
    expect(none.body).toBeUndefined();
  });

  it("the mock's cache counts hits per prefix, evicting the least recently used", () => {
    const cache = new PrefixCache({ capacity: 2, ttlMs: 1000 });
    const req = (system: string) => JSON.parse(chat(system, 'q')) as unknown;
    expect(cache.lookup(req('a'), 0)).toBe('miss');
    expect(cache.lookup(req('a'), 10)).toBe('hit');
    expect(cache.lookup(req('b'), 20)).toBe('miss');
    expect(cache.lookup(req('c'), 30)).toBe('miss'); // evicts a
    expect(cache.lookup(req('a'), 40)).toBe('miss');
    expect(cache.lookup(req('a'), 2000)).toBe('miss'); // older than ttlMs
    expect(cache.lookup(JSON.parse(chat(null, 'q')), 50)).toBe('uncached');
    expect(cache.stats()).toEqual({ hits: 1, misses: 5, uncached: 1 });
    expect(cacheablePrefix({ messages: [{ role: 'user', content: 'q' }] })).toBeNull();
  });
});

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb({ max: 6 });
  // A long TTL: only the capacity decides, so a stalled machine cannot turn hits into misses.
  mock = await startMockUpstream({ record: false, prefixCache: { capacity: 4, ttlMs: 600_000 } });
});
afterAll(async () => {
  await mock?.close();
  await db?.close();
});

/** 2,000 chat requests over 20 system prompts, in an order shuffled by a fixed seed. */
function shuffledTemplates(tag: string): RequestTemplateInput[] {
  const out: RequestTemplateInput[] = [];
  for (let i = 0; i < 2000; i++) {
    const system = `You are assistant ${i % 20}. ${'Follow the house style guide carefully. '.repeat(20)}`;
    out.push({
      endpoint: mock.url,
      method: 'POST',
      path: '/v1/chat/completions',
      body: chat(system, `question ${i}`),
      model: 'gpt-prefix',
      apiKey: 'sk-x',
      customId: `${tag}-${i}`,
    });
  }
  let seed = 12345;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('claim order by prompt prefix', () => {
  it('a shuffled batch over 20 system prompts gets ≥ 80 % cache hits, against line order in the same run', async () => {
    const m = db.manager({ pollIntervalMs: 200, modelConcurrencyLimits: { 'gpt-prefix': 8 } });
    const hitRate = async (tag: string, lineOrder: boolean) => {
      // Line order is today's order: the batch's requests without their prefix hashes.
      const fileId = await m.createFile(`${tag}.jsonl`, null, shuffledTemplates(tag));
      const { rows } = await db.pool.query(
        `SELECT count(DISTINCT prefix_hash)::int AS groups, count(*) FILTER (WHERE prefix_hash IS NULL)::int AS none
           FROM ${m.schema}.request_templates WHERE file_id = $1`,
        [fileId],
      );
      expect(rows[0]).toEqual({ groups: 20, none: 0 });
      if (lineOrder) {
        await db.pool.query(
          `UPDATE ${m.schema}.request_templates SET prefix_hash = NULL WHERE file_id = $1`,
          [fileId],
        );
      }
      mock.reset();
      const daemon = await m.run();
      try {
        const batchId = await m.createBatch(fileId);
        // A deadline only against a hang: 2,000 requests on a loaded shared machine take what they take.
        const status = await waitForBatchEnd(m, batchId, 600_000);
        expect(status).toMatchObject({ status: 'completed', completedRequests: 2000 });
      } finally {
        await daemon.stop();
      }
      const stats = mock.prefixCache!.stats();
      expect(stats.hits + stats.misses).toBe(2000);
      return stats.hits / 2000;
    };
    const grouped = await hitRate('grouped', false);
    const baseline = await hitRate('baseline', true);
    // 20 prompts through a 4-prefix cache: line order hits ~4/20 of the time, prefix order misses
    // about once per prompt.
    expect(grouped).toBeGreaterThanOrEqual(0.8);
    expect(baseline).toBeLessThan(0.5);
  }, 1_300_000);

  it('a body that is not JSON has no prefix and is still sent', async () => {
    const m = db.manager({ pollIntervalMs: 200 });
    const daemon = await m.run();
    try {
      const batchId = await createBatch(m, [
        {
          endpoint: mock.url,
          method: 'POST',
          path: '/v1/echo',
          body: 'messages=[1,2]',
          contentType: 'text/plain',
          model: 'plain',
          apiKey: 'sk-x',
          customId: 'p',
        },
      ]);
      expect(await waitForBatchEnd(m, batchId, 600_000)).toMatchObject({ completedRequests: 1 });
      const { rows } = await db.pool.query(
        `SELECT prefix_hash FROM ${m.schema}.requests WHERE batch_id = $1`,
        [batchId],
      );
      expect(rows).toEqual([{ prefix_hash: null }]);
    } finally {
      await daemon.stop();
    }
  }, 700_000);
});
