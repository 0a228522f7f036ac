import { describe, expect, it } from 'vitest';
import { REDACTED_KEY, redactKeys } from '../../src/domain/redact-keys.js';

describe('redactKeys', () => {
  const key = 'sk-proj/abc+def"0123456789';
  it('replaces a key as sent, JSON-escaped and percent-encoded, everywhere it occurs', () => {
    const text = `a ${key} b ${JSON.stringify(key)} c ${encodeURIComponent(key)} d ${key}`;
    const out = redactKeys(text, [key]);
    expect(out).not.toContain('0123456789');
    expect(out.split(REDACTED_KEY)).toHaveLength(5);
  });
  it('leaves text without a key (and keys too short to be told from text) as it is', () => {
    expect(redactKeys('nothing here', [key, ''])).toBe('nothing here');
    expect(redactKeys('the word short', ['short'])).toBe('the word short');
    expect(redactKeys(null, [key])).toBeNull();
  });
  it('redacts every key given', () => {
    expect(redactKeys('x sk-aaaaaaaaaa y sk-bbbbbbbbbb', ['sk-aaaaaaaaaa', 'sk-bbbbbbbbbb'])).toBe(
      `x ${REDACTED_KEY} y ${REDACTED_KEY}`,
    );
  });
  it('redacts every form of each key however many keys it has seen (the forms it caches are bounded)', () => {
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 200; i++) {
        const k = `sk-many/${i}"${'x'.repeat(10)}`;
        const text = `${k} ${JSON.stringify(k)} ${encodeURIComponent(k)}`;
        expect(redactKeys(text, [k, k, 'sk-other-key-0000'])).toBe(
          `${REDACTED_KEY} "${REDACTED_KEY}" ${REDACTED_KEY}`,
        );
      }
    }
  });
});
