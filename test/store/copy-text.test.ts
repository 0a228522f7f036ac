import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { copyField, copyRow } from '../../src/store/files/copy-text.js';

/** COPY text format's field escaping as PostgreSQL's docs state it: four passes, backslash first. */
const reference = (value: string): string =>
  value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');

describe('copy-text', () => {
  it('escapes a field as the four-pass reference does, for any text', () => {
    const text = fc.string({ unit: fc.constantFrom('a', 'é', '\\', '\n', '\r', '\t', '"', 'N', ' ') });
    fc.assert(
      fc.property(fc.oneof(text, fc.string()), (value) => {
        expect(copyField(value)).toBe(reference(value));
      }),
    );
  });

  it('writes null as \\N, numbers as digits, and a row as tab-separated fields ending in a newline', () => {
    expect(copyField(null)).toBe('\\N');
    expect(copyField(undefined)).toBe('\\N');
    expect(copyField(42)).toBe('42');
    expect(copyRow(['a\tb', 7, null, 'c\\d\ne'])).toBe('a\\tb\t7\t\\N\tc\\\\d\\ne\n');
    expect(copyRow(['only'])).toBe('only\n');
  });
});
