/*
 * Delimiting the top-level members of one JSON object line without parsing their values: the
 * batch input parser reads only the members it needs (src/domain/batch-input.ts). Pure.
 */

/**
 * The spans of a line's top-level members (last occurrence wins, as with JSON.parse), or null if
 * the line is not a JSON object. Member values are delimited here, not validated: callers parse
 * the ones they read.
 */
export function topLevelMembers(text: string): Map<string, [number, number]> | null {
  const members = new Map<string, [number, number]>();
  let i = skipWs(text, 0);
  if (text.charCodeAt(i) !== 0x7b) return null;
  i = skipWs(text, i + 1);
  if (text.charCodeAt(i) === 0x7d) return skipWs(text, i + 1) === text.length ? members : null;
  for (;;) {
    if (text.charCodeAt(i) !== 0x22) return null;
    const keyEnd = skipString(text, i);
    let key: string;
    try {
      key = JSON.parse(text.slice(i, keyEnd)) as string;
    } catch {
      return null;
    }
    i = skipWs(text, keyEnd);
    if (text.charCodeAt(i) !== 0x3a) return null;
    i = skipWs(text, i + 1);
    const valueEnd = skipValue(text, i);
    if (valueEnd === i || valueEnd > text.length) return null;
    members.set(key, [i, valueEnd]);
    i = skipWs(text, valueEnd);
    const c = text.charCodeAt(i);
    if (c === 0x2c) {
      i = skipWs(text, i + 1);
      continue;
    }
    if (c !== 0x7d) return null;
    return skipWs(text, i + 1) === text.length ? members : null;
  }
}

/**
 * Where the value of top-level member `key` sits in `text`, which must be a valid JSON object
 * (it has been parsed already). The last occurrence wins, as with JSON.parse.
 */
export function memberSpan(text: string, key: string): [number, number] | undefined {
  let found: [number, number] | undefined;
  let i = skipWs(text, 0) + 1; // past '{'
  for (;;) {
    i = skipWs(text, i);
    if (text.charCodeAt(i) !== 0x22) break; // '}' (or malformed: stop)
    const keyEnd = skipString(text, i);
    const name = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipWs(text, keyEnd) + 1; // past ':'
    i = skipWs(text, i);
    const valueEnd = skipValue(text, i);
    if (name === key) found = [i, valueEnd];
    i = skipWs(text, valueEnd);
    if (text.charCodeAt(i) === 0x2c) i++;
  }
  return found;
}

function skipWs(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
    else return i;
  }
}

/** From an opening quote at `i` to just past the closing one. */
function skipString(text: string, i: number): number {
  let j = i + 1;
  for (;;) {
    const q = text.indexOf('"', j);
    if (q === -1) return text.length;
    let backslashes = 0;
    for (let k = q - 1; text.charCodeAt(k) === 0x5c; k--) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    j = q + 1;
  }
}

function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x22) return skipString(text, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    let j = i;
    while (j < text.length) {
      const d = text.charCodeAt(j);
      if (d === 0x22) {
        j = skipString(text, j);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return j + 1;
      }
      j++;
    }
    return j;
  }
  let j = i;
  while (j < text.length) {
    const d = text.charCodeAt(j);
    if (d === 0x2c || d === 0x7d || d === 0x5d || d === 0x20 || d === 0x09 || d === 0x0a || d === 0x0d) break;
    j++;
  }
  return j;
}
