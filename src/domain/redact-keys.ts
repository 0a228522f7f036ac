/**
 * Upstream keys taken out of upstream answers before they are stored: an upstream may repeat the
 * request's credentials in its answer ("Incorrect API key provided: Bearer sk-…"), and the answer is
 * served to the tenant in the error file. Each key is replaced wherever it appears as sent, as a JSON
 * string escapes it, or percent-encoded (an echoed URL).
 *
 * Keys shorter than MIN_REDACTED_KEY_LENGTH are left alone: they would match ordinary text, and no
 * real upstream issues keys that short.
 */

export const MIN_REDACTED_KEY_LENGTH = 8;

/** What stands where a key was. */
export const REDACTED_KEY = '[redacted upstream key]';

/** The forms of `key` an answer may carry it in, longest first. */
function formsOf(key: string): string[] {
  const out = new Set([key, JSON.stringify(key).slice(1, -1), encodeURIComponent(key)]);
  return [...out].sort((a, b) => b.length - a.length);
}

/**
 * The forms of the keys seen lately: every answer is redacted with the route's key and the
 * attempt's (usually the same), and making their forms again for each answer was most of the
 * redaction's cost. One key, as the route's and the attempt's, on a 600-byte answer with no key in
 * it: 0.3 µs a request against 1.8 µs (a microbench). Bounded: emptied when it holds FORMS_CACHE_MAX keys
 * (keys live in this process's memory anyway; the cache is never logged or written).
 */
const FORMS_CACHE_MAX = 64;
const formsCache = new Map<string, string[]>();

function forms(key: string): string[] {
  let out = formsCache.get(key);
  if (out === undefined) {
    if (formsCache.size >= FORMS_CACHE_MAX) formsCache.clear();
    out = formsOf(key);
    formsCache.set(key, out);
  }
  return out;
}

/** `text` with every form of every key replaced by REDACTED_KEY (the same string when none is in it). */
export function redactKeys(text: string, keys: Iterable<string>): string;
export function redactKeys(text: string | null, keys: Iterable<string>): string | null;
export function redactKeys(text: string | null, keys: Iterable<string>): string | null {
  if (text === null) return null;
  let out = text;
  let previous: string | null = null;
  for (const key of keys) {
    // The attempt's key is usually also the route's, next to it: one pass is enough.
    if (key.length < MIN_REDACTED_KEY_LENGTH || key === previous) continue;
    previous = key;
    for (const form of forms(key)) {
      // includes() first: a native scan, so answers without the key cost no copy.
      if (out.includes(form)) out = out.replaceAll(form, REDACTED_KEY);
    }
  }
  return out;
}
