/** Encoding of values for PostgreSQL's COPY text format. */

/** The characters COPY's text format escapes in a field: backslash, and those that end a field or row. */
const SPECIAL = /[\\\n\r\t]/;
const SPECIALS = /[\\\n\r\t]/g;
const ESCAPED: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const escapeOne = (c: string): string => ESCAPED[c]!;

/**
 * One field. A value without a special character (most: ids, models, paths, JSON bodies on one line)
 * is returned as it is after one native scan. Measured (11-field template rows as the store writes
 * them, 300,000 in a loop): 0.44 µs a row against 1.80 µs for four chained replace() passes per
 * field, the store phase's largest self time of our code in a CPU profile of `fusillade run`.
 */
export function copyField(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '\\N';
  if (typeof value === 'number') return String(value);
  return SPECIAL.test(value) ? value.replace(SPECIALS, escapeOne) : value;
}

export function copyRow(values: (string | number | null | undefined)[]): string {
  if (values.length === 0) return '\n';
  let row = copyField(values[0]);
  for (let i = 1; i < values.length; i++) row += `\t${copyField(values[i])}`;
  return `${row}\n`;
}
