/** Encoding of values for PostgreSQL's COPY text format. */
export function copyField(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '\\N';
  if (typeof value === 'number') return String(value);
  // Backslash first; then the characters that would end a field or a row.
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
}

export function copyRow(values: (string | number | null | undefined)[]): string {
  return values.map(copyField).join('\t') + '\n';
}
