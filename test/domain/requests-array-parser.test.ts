import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/domain/errors.js';
import { RequestsArrayParser } from '../../src/domain/requests-array-parser.js';

/** Feeds `body` in pieces of `size` bytes; returns the request texts or the error. */
function split(body: string, size: number, maxBytes = 1 << 20): string[] | ValidationError {
  const parser = new RequestsArrayParser(maxBytes);
  const bytes = Buffer.from(body);
  const out: string[] = [];
  try {
    for (let i = 0; i < bytes.length; i += size) out.push(...parser.push(bytes.subarray(i, i + size)));
    parser.end();
    return out;
  } catch (err) {
    if (err instanceof ValidationError) return err;
    throw err;
  }
}

const requests = [
  {
    custom_id: 'a',
    params: { model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x } ] {"' }] },
  },
  { custom_id: 'b\\"', params: { nested: [[{}], { a: [1, 2] }], text: 'é 日本 \u2028 \\\\' } },
];

describe('RequestsArrayParser', () => {
  it('splits the requests exactly as JSON.parse reads them, whatever the chunk boundaries', () => {
    const bodies = [
      JSON.stringify({ requests }),
      JSON.stringify({ requests }, null, 2),
      ` { "requests" :[ ${requests.map((r) => JSON.stringify(r)).join(' ,\n')} ] } \n`,
    ];
    for (const body of bodies) {
      for (const size of [1, 2, 3, 7, 64, body.length]) {
        const got = split(body, size);
        expect(got).not.toBeInstanceOf(ValidationError);
        expect((got as string[]).map((t) => JSON.parse(t))).toEqual(requests);
      }
    }
  });

  it.each([
    ['[]', /must be a JSON object/],
    ['{}', /requests: Field required/],
    ['{"requests": {}}', /requests: Field required/],
    ['{"requests": []}', /at least one request/],
    ['{"requests": [1]}', /requests\.0: must be an object/],
    ['{"requests": [{}, 2]}', /requests\.1: must be an object/],
    ['{"requests": [{},]}', /not valid JSON/],
    ['{"requests": [{} {}]}', /comma is missing/],
    ['{"requests": [{}], "x": 1}', /only member/],
    ['{"model": "x", "requests": [{}]}', /model: Extra inputs are not permitted/],
    ['{"requests": [{"a": "}"', /ends early/],
    ['{"requests": [{}]} x', /text after the object/],
    ['', /must be a JSON object/],
  ])('refuses %j', (body, message) => {
    const got = split(body, 3);
    expect(got).toBeInstanceOf(ValidationError);
    expect((got as ValidationError).message).toMatch(message);
  });

  it('refuses a body over the limit as soon as it passes it', () => {
    const got = split(
      JSON.stringify({ requests: [{ custom_id: 'a', params: { t: 'x'.repeat(100) } }] }),
      10,
      50,
    );
    expect((got as ValidationError).issues[0]?.code).toBe('file_too_large');
  });
});
