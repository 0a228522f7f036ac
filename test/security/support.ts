import type { TestServer } from '../server/support.js';

/** Raw HTTP helpers for the security suite: every answer's text is kept so tests can scan it. */

export interface Answer {
  status: number;
  text: string;
  json: unknown;
  headers: Headers;
}

export class Recorder {
  /** Every answer body seen (and the headers, serialised), for secret scans. */
  readonly seen: string[] = [];

  constructor(private readonly t: TestServer) {}

  async call(
    method: string,
    path: string,
    options: { key?: string | null; auth?: string; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.auth !== undefined) headers.authorization = options.auth;
    else if (options.key) headers.authorization = `Bearer ${options.key}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${this.t.server.url}${path}`, { method, headers, body });
    const text = await res.text();
    this.seen.push(text, JSON.stringify([...res.headers]));
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, text, json, headers: res.headers };
  }
}

/** Replaces every OpenAI-style id and UUID in `text`, so two not-found answers can be compared. */
export function withoutIds(text: string): string {
  return text
    .replace(/(file-|batch_req_|batch_)[0-9a-zA-Z]+/g, '$1<id>')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<uuid>');
}

export const ZERO_UUID = '00000000-0000-4000-8000-000000000000';
export const NO_FILE = `file-${'0'.repeat(31)}1`;
export const NO_BATCH = `batch_${'0'.repeat(31)}1`;
