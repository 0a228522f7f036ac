import { hash } from 'node:crypto';

/*
 * The prompt prefix of a request, hashed at ingest so that the claim can send requests sharing it
 * together (src/db/sql/claim.ts) and an upstream with prefix caching (vLLM, SGLang, OpenAI,
 * Anthropic prompt caching) serves them from its cache. Pure.
 *
 * The prefix is what a request sends before the part that varies, as the common APIs lay it out:
 *   - `tools`, `system` (Anthropic) and `instructions` (Responses), when present, and
 *   - the first element of `messages` (or of `input` for Responses) when it is a system/developer
 *     message or is not the last one (a shared document or a few-shot example before the question).
 * A request with none of these (one user message, a completion prompt, an embedding) has no prefix
 * (null) and is sent in line order. The first message rather than all but the last: requests that
 * share a system prompt but differ after it (distinct conversations) stay in one group, which is
 * the part an upstream's cache can share; a longer prefix would split them into groups of one.
 *
 * Each part is canonical JSON (keys sorted, no whitespace) so that formatting does not split a group.
 * The hash is the first 8 bytes of its SHA-256 as a signed int8 (8 bytes per request; a collision
 * only puts two groups side by side in the claim order, it never changes what is sent).
 *
 * Cost at ingest (1.2 KB chat bodies with a system prompt, 20,000 in a loop, the loaded shared
 * machine): 10–29 µs a body across runs, against 1.8–8.5 µs for the JSON.parse validateTemplate
 * already does (≈3×; a body without a prefix costs one parse). The one-shot crypto.hash halved the
 * time of createHash(); scanning the top-level members without parsing (json-members.ts) and
 * parsing only the prefix parts measured 44 µs: its character loop over the messages array costs
 * more than V8's parser.
 */

/** JSON with object keys sorted at every level and no whitespace: equal values, equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).sort();
  const parts: string[] = [];
  for (const k of keys) {
    const v = (value as Record<string, unknown>)[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

const PREFIX_MEMBERS = ['tools', 'system', 'instructions'] as const;
const LEADING_ROLES = new Set(['system', 'developer']);

/**
 * The canonical text of a JSON body's prompt prefix, or null when it has none (see above). `body`
 * must be valid JSON (ingest has checked it); anything else has no prefix.
 */
export function promptPrefix(body: string): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return null;
  }
  return promptPrefixOf(parsed);
}

/** promptPrefix of a body already parsed: the value JSON.parse gave for it. */
export function promptPrefixOf(parsed: unknown): string | null {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return null;
  const b = parsed as Record<string, unknown>;
  const parts: string[] = [];
  for (const name of PREFIX_MEMBERS) {
    if (b[name] !== undefined) parts.push(`${name}=${canonicalJson(b[name])}`);
  }
  const list = Array.isArray(b.messages) ? b.messages : Array.isArray(b.input) ? b.input : null;
  if (list && list.length > 0) {
    const first = list[0] as { role?: unknown } | null;
    const leading = typeof first?.role === 'string' && LEADING_ROLES.has(first.role);
    if (leading || list.length > 1) parts.push(`first=${canonicalJson(first)}`);
  }
  return parts.length > 0 ? parts.join('\n') : null;
}

/**
 * The prompt prefix hash stored with a request (int8 as a decimal string, for COPY and node-pg),
 * or null for a body without a prefix.
 */
export function promptPrefixHash(body: string): string | null {
  return hashOf(promptPrefix(body));
}

/** promptPrefixHash of a body already parsed (the store's validation parses each body once). */
export function promptPrefixHashOf(parsed: unknown): string | null {
  return hashOf(promptPrefixOf(parsed));
}

function hashOf(prefix: string | null): string | null {
  if (prefix === null) return null;
  return (hash('sha256', prefix, 'buffer') as Buffer).readBigInt64BE(0).toString();
}
