import { ValidationError } from './errors.js';

/**
 * Splits a message batch creation body `{"requests": [ {…}, {…}, … ]}` into the JSON text of each
 * request as the bytes arrive, so a 256 MB body is never held whole: only the request being read
 * is. Pure: fed byte chunks, it returns the requests it finished. The skeleton around the requests
 * is checked as it is scanned; each request's own text is the caller's to JSON.parse. `requests`
 * is the body's only member (another is refused, as Anthropic refuses extra inputs). States:
 *
 *   start ──{── key ──"requests"── colon ──:── value ──[── array ⇄ element ──]── close ──}── done
 *
 * In `array`, `{` opens an element, `,` separates, `]` ends; an element ends when its braces
 * balance (strings and their escapes are skipped, so braces inside them do not count).
 */

type State = 'start' | 'key' | 'colon' | 'value' | 'array' | 'element' | 'close' | 'done';

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export class RequestsArrayParser {
  private state: State = 'start';
  private inString = false;
  private escaped = false;
  private depth = 0;
  private key: number[] = [];
  /** Pieces of the element being read (chunks it spans). */
  private pieces: Buffer[] = [];
  /** In `array`: whether an element may come next (after `[` or `,`). */
  private open = true;
  private count = 0;
  private total = 0;

  constructor(private readonly maxBytes: number) {}

  /** Bytes read so far. */
  get bytes(): number {
    return this.total;
  }

  /** Feeds the next chunk; returns the texts of the requests it completed. */
  push(chunk: Uint8Array): string[] {
    this.total += chunk.length;
    if (this.total > this.maxBytes) {
      throw new ValidationError([
        { code: 'file_too_large', param: 'body', message: `the body is larger than ${this.maxBytes} bytes` },
      ]);
    }
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const out: string[] = [];
    let start = this.state === 'element' ? 0 : -1;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i]!;
      if (this.state === 'element') {
        if (!this.closes(c)) continue;
        this.pieces.push(buf.subarray(start, i + 1));
        out.push(Buffer.concat(this.pieces).toString('utf8'));
        this.pieces = [];
        start = -1;
        this.count++;
        this.state = 'array';
        this.open = false;
        continue;
      }
      if (this.state === 'key' && this.inString) {
        this.readKey(c);
        continue;
      }
      if (WS.has(c)) continue;
      switch (this.state) {
        case 'start':
          this.expect(c === 0x7b, 'the body must be a JSON object');
          this.state = 'key';
          break;
        case 'key':
          if (c === 0x7d) throw missing();
          this.expect(c === QUOTE, 'the body is not valid JSON');
          this.inString = true;
          break;
        case 'colon':
          this.expect(c === 0x3a, 'the body is not valid JSON');
          this.state = 'value';
          break;
        case 'value':
          if (c !== 0x5b) throw missing();
          this.state = 'array';
          this.open = true;
          break;
        case 'array':
          if (c === 0x5d) {
            if (this.count === 0) throw invalid('requests', 'requests: must contain at least one request');
            this.expect(!this.open, 'the body is not valid JSON (a comma before "]")');
            this.state = 'close';
          } else if (c === 0x2c) {
            this.expect(!this.open, 'the body is not valid JSON');
            this.open = true;
          } else {
            this.expect(this.open, 'the body is not valid JSON (a comma is missing)');
            if (c !== 0x7b) {
              const at = `requests.${this.count}`;
              throw invalid(at, `${at}: must be an object with custom_id and params`);
            }
            this.state = 'element';
            this.depth = 1;
            start = i;
          }
          break;
        case 'close':
          if (c === 0x2c) throw invalid('body', 'requests must be the only member of the body');
          this.expect(c === 0x7d, 'the body is not valid JSON');
          this.state = 'done';
          break;
        case 'done':
          throw invalid('body', 'the body is not valid JSON (text after the object)');
      }
    }
    // The rest of an element continues in the next chunk; copied, as the caller may reuse its buffer.
    if (this.state === 'element' && start !== -1) this.pieces.push(Buffer.from(buf.subarray(start)));
    return out;
  }

  /** Ends the body: throws unless it was one whole object with a requests array. */
  end(): void {
    if (this.state === 'done') return;
    if (this.state === 'start') throw invalid('body', 'the body must be a JSON object');
    if (this.state === 'key' || this.state === 'colon' || this.state === 'value') throw missing();
    throw invalid('body', 'the body is not valid JSON (it ends early)');
  }

  /** One byte of an element; true when it closes the element (its braces balance). */
  private closes(c: number): boolean {
    if (this.inString) {
      if (this.escaped) this.escaped = false;
      else if (c === BACKSLASH) this.escaped = true;
      else if (c === QUOTE) this.inString = false;
      return false;
    }
    if (c === QUOTE) this.inString = true;
    else if (c === 0x7b || c === 0x5b) this.depth++;
    else if (c === 0x7d || c === 0x5d) return --this.depth === 0;
    return false;
  }

  /** One byte of a member name; at its closing quote, only "requests" is accepted. */
  private readKey(c: number): void {
    if (this.escaped || (c !== QUOTE && c !== BACKSLASH)) {
      this.escaped = false;
      if (this.key.length < 256) this.key.push(c);
      return;
    }
    if (c === BACKSLASH) {
      this.escaped = true;
      this.key.push(c);
      return;
    }
    this.inString = false;
    let name: string;
    try {
      name = JSON.parse(`"${Buffer.from(this.key).toString('utf8')}"`) as string;
    } catch {
      throw invalid('body', 'the body is not valid JSON');
    }
    this.key = [];
    if (name !== 'requests') throw invalid(name, `${name}: Extra inputs are not permitted`);
    this.state = 'colon';
  }

  private expect(ok: boolean, message: string): void {
    if (!ok) throw invalid('body', message);
  }
}

function invalid(param: string, message: string): ValidationError {
  return new ValidationError([{ code: 'invalid_request_error', param, message }]);
}

function missing(): ValidationError {
  return invalid('requests', 'requests: Field required (an array of requests)');
}
