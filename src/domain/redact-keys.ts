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
function forms(key: string): string[] {
  const out = new Set([key, JSON.stringify(key).slice(1, -1), encodeURIComponent(key)]);
  return [...out].sort((a, b) => b.length - a.length);
}

/** `text` with every form of every key replaced by REDACTED_KEY (the same string when none is in it). */
export function redactKeys(text: string, keys: Iterable<string>): string;
export function redactKeys(text: string | null, keys: Iterable<string>): string | null;
export function redactKeys(text: string | null, keys: Iterable<string>): string | null {
  if (text === null) return null;
  let out = text;
  for (const key of keys) {
    if (key.length < MIN_REDACTED_KEY_LENGTH) continue;
    for (const form of forms(key)) {
      // includes() first: a native scan, so answers without the key cost no copy.
      if (out.includes(form)) out = out.replaceAll(form, REDACTED_KEY);
    }
  }
  return out;
}
