import type { ValidationIssue } from './errors.js';
import { isEncryptedKey } from './key-encryption.js';

/** One request to send, as the Rust crate's RequestTemplateInput. */
export interface RequestTemplateInput {
  /** Upstream base URL, e.g. "https://api.openai.com" (the path is appended). */
  endpoint: string;
  /** HTTP method; POST for every OpenAI batch endpoint. */
  method: string;
  /** URL path sent to the upstream, e.g. "/v1/chat/completions". */
  path: string;
  /** Request body, sent byte for byte: JSON unless `contentType` says otherwise. */
  body: string;
  /** Model name; selects the concurrency limit. */
  model: string;
  /** Upstream API key sent as `Authorization: Bearer` (empty: none, unless the batch is routed by a router's key). */
  apiKey: string;
  /** The caller's id for this request; unique within a file when given. */
  customId?: string | null;
  /**
   * The body's media type, sent as Content-Type (default "application/json"). A JSON type (that one,
   * with parameters, or `…+json`) keeps the LLM rules: the body must be JSON and a 2xx answer that
   * is not JSON is retried. Any other type ("text/plain", "application/x-www-form-urlencoded", …):
   * the body is any text and any 2xx answer completes as it is (an answer that is not JSON appears
   * in results as a JSON string).
   */
  contentType?: string | null;
}

/** A media type as a header value can carry it: type/subtype and optional parameters, no controls. */
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;[\x20-\x7e]*)?$/;

/** Whether a template's content type is JSON (absent: application/json). */
export function isJsonContentType(contentType: string | null | undefined): boolean {
  if (contentType === undefined || contentType === null) return true;
  const essence = contentType.split(';')[0]!.trim().toLowerCase();
  return essence === 'application/json' || essence.endsWith('+json');
}

export const ALLOWED_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
const BODYLESS = new Set(['GET', 'DELETE']);

/**
 * Checks one template. Returns the issues found (empty when valid). `index` is the template's
 * 0-based position, reported in every issue. A JSON body is parsed to check it; with `parsed`,
 * the value is left in `parsed.body` (untouched when the body is not parsed), so that a caller
 * that reads the body (the store's prompt-prefix hash) does not parse it again.
 */
export function validateTemplate(
  t: RequestTemplateInput,
  index: number,
  parsed?: { body?: unknown },
): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const bad = (code: string, param: string, message: string) => issues.push({ code, param, message, index });
  if (t === null || typeof t !== 'object') {
    bad('invalid_template', '', 'template must be an object');
    return issues;
  }
  if (typeof t.model !== 'string' || t.model.trim() === '')
    bad('missing_model', 'model', 'model is required');
  if (typeof t.endpoint !== 'string' || !/^https?:\/\/[^\s]+$/i.test(t.endpoint)) {
    bad(
      'invalid_endpoint',
      'endpoint',
      `endpoint must be an http(s) base URL, got ${JSON.stringify(t.endpoint)}`,
    );
  }
  if (typeof t.path !== 'string' || !t.path.startsWith('/')) {
    bad('invalid_path', 'path', `path must start with "/", got ${JSON.stringify(t.path)}`);
  }
  const method = typeof t.method === 'string' ? t.method.toUpperCase() : t.method;
  if (!ALLOWED_METHODS.includes(method as (typeof ALLOWED_METHODS)[number])) {
    bad(
      'invalid_method',
      'method',
      `method must be one of ${ALLOWED_METHODS.join(', ')}, got ${JSON.stringify(t.method)}`,
    );
  }
  const contentType = t.contentType;
  if (contentType !== undefined && contentType !== null) {
    if (typeof contentType !== 'string' || !MEDIA_TYPE.test(contentType)) {
      bad(
        'invalid_content_type',
        'contentType',
        `contentType must be a media type such as "text/plain", got ${JSON.stringify(contentType)}`,
      );
    }
  }
  const json = typeof contentType !== 'string' || isJsonContentType(contentType);
  if (typeof t.body !== 'string') {
    bad('invalid_body', 'body', json ? 'body must be a string of JSON' : 'body must be a string');
  } else if (json && !(BODYLESS.has(String(method)) && t.body === '')) {
    try {
      const value: unknown = JSON.parse(t.body);
      if (parsed) parsed.body = value;
    } catch {
      bad('invalid_json_body', 'body', 'body is not valid JSON');
    }
  }
  if (t.apiKey !== undefined && t.apiKey !== null && typeof t.apiKey !== 'string') {
    bad('invalid_api_key', 'apiKey', 'apiKey must be a string');
  } else if (typeof t.apiKey === 'string' && isEncryptedKey(t.apiKey)) {
    // Stored as given, it would read as a sealed key (and be opened instead of sent).
    bad('invalid_api_key', 'apiKey', 'apiKey must not start with "fk1." (the form of a sealed key)');
  }
  if (t.customId !== undefined && t.customId !== null && typeof t.customId !== 'string') {
    bad('invalid_custom_id', 'customId', 'customId must be a string');
  }
  for (const [param, v] of [
    ['model', t.model],
    ['customId', t.customId],
    ['path', t.path],
    ['apiKey', t.apiKey],
    ['body', t.body],
  ]) {
    if (typeof v === 'string' && v.includes('\u0000'))
      bad('invalid_string', String(param), `${param} contains a NUL character`);
  }
  return issues;
}

/** Tracks custom_id uniqueness across a stream of templates. */
export class CustomIdSet {
  private readonly seen = new Map<string, number>();
  /** Returns an issue if `customId` was already seen, else records it. */
  check(customId: string | null | undefined, index: number): ValidationIssue | undefined {
    if (customId === undefined || customId === null) return undefined;
    const first = this.seen.get(customId);
    if (first !== undefined) {
      return {
        code: 'duplicate_custom_id',
        param: 'customId',
        index,
        message: `customId ${JSON.stringify(customId)} duplicates template ${first}`,
      };
    }
    this.seen.set(customId, index);
    return undefined;
  }
}
