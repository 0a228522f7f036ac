import { Transform, type TransformCallback } from 'node:stream';

/**
 * Turns `COPY … TO STDOUT` text-format output of one text column into JSONL. COPY escapes a
 * backslash as `\\` and control characters as `\n`, `\r`, `\t`, …; rows end with a raw newline.
 * A raw newline or carriage return inside a line can only be JSON whitespace (JSON strings escape
 * theirs), so those become spaces and every row stays one line. PostgreSQL already scans every
 * byte to escape it, so this costs the database nothing; checking each body for newlines in SQL
 * (strpos) cost as much as reading it.
 */

const BACKSLASH = 0x5c;
const DECODE = new Uint8Array(256).map((_, i) => i);
DECODE['\\'.charCodeAt(0)] = BACKSLASH;
DECODE['n'.charCodeAt(0)] = 0x20;
DECODE['r'.charCodeAt(0)] = 0x20;
DECODE['t'.charCodeAt(0)] = 0x09;
DECODE['b'.charCodeAt(0)] = 0x08;
DECODE['f'.charCodeAt(0)] = 0x0c;
DECODE['v'.charCodeAt(0)] = 0x0b;

export class CopyTextToJsonl extends Transform {
  /** The previous chunk ended in the middle of an escape. */
  private pendingEscape = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let start = 0;
    let lead: number | undefined;
    if (this.pendingEscape && chunk.length > 0) {
      lead = DECODE[chunk[0]!]!;
      start = 1;
      this.pendingEscape = false;
    }
    let at = chunk.indexOf(BACKSLASH, start);
    if (at === -1 && lead === undefined) {
      done(null, chunk);
      return;
    }
    // Decoding only shrinks: one output byte per escape pair.
    const out = Buffer.allocUnsafe(chunk.length - start + 1);
    let w = 0;
    if (lead !== undefined) out[w++] = lead;
    while (at !== -1) {
      w += chunk.copy(out, w, start, at);
      if (at + 1 >= chunk.length) {
        this.pendingEscape = true;
        start = chunk.length;
        break;
      }
      out[w++] = DECODE[chunk[at + 1]!]!;
      start = at + 2;
      at = chunk.indexOf(BACKSLASH, start);
    }
    if (start < chunk.length) w += chunk.copy(out, w, start);
    done(null, out.subarray(0, w));
  }
}

/** Undoes COPY text escapes in buf[start, end); returns a view when there are none. */
function unescaped(buf: Buffer, start: number, end: number): Buffer {
  let at = buf.indexOf(BACKSLASH, start);
  if (at === -1 || at >= end) return buf.subarray(start, end);
  const out = Buffer.allocUnsafe(end - start);
  let w = 0;
  let from = start;
  while (at !== -1 && at < end - 1) {
    w += buf.copy(out, w, from, at);
    out[w++] = DECODE[buf[at + 1]!]!;
    from = at + 2;
    at = buf.indexOf(BACKSLASH, from);
  }
  w += buf.copy(out, w, from, end);
  return out.subarray(0, w);
}

const PIECE_BYTES = 256 * 1024;
const TAB = 0x09;
const NEWLINE = 0x0a;
const QUOTE = 0x22;
const PART = {
  id: Buffer.from('{"id":"batch_req_'),
  customId: Buffer.from('","custom_id":'),
  status: Buffer.from(',"response":{"status_code":'),
  requestId: Buffer.from(',"request_id":'),
  body: Buffer.from(',"body":'),
  end: Buffer.from('},"error":null}\n'),
  null: Buffer.from('null'),
  quote: Buffer.from('"'),
};

/** A growable output buffer: rows are written straight into it, no per-field allocations. */
class Out {
  buf: Buffer;
  at = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
  }
  bytes(src: Buffer, start = 0, end = src.length): void {
    this.ensure(end - start);
    this.at += src.copy(this.buf, this.at, start, end);
  }
  /**
   * src[start, end) with COPY text escapes undone. Returns true when the range ends in the first
   * byte of an escape (a row cut by a chunk end): that backslash is not written, the caller
   * decodes the escape from the next chunk's first byte.
   */
  unescaped(src: Buffer, start: number, end: number): boolean {
    this.ensure(end - start);
    let at = src.indexOf(BACKSLASH, start);
    let from = start;
    while (at !== -1 && at < end - 1) {
      this.at += src.copy(this.buf, this.at, from, at);
      this.buf[this.at++] = DECODE[src[at + 1]!]!;
      from = at + 2;
      at = src.indexOf(BACKSLASH, from);
    }
    const cutEscape = at !== -1 && at === end - 1;
    this.at += src.copy(this.buf, this.at, from, cutEscape ? at : end);
    return cutEscape;
  }
  /** A text column as a JSON string (null for COPY's \N): quoted as-is unless it needs escapes. */
  jsonString(src: Buffer, start: number, end: number): void {
    if (end - start === 2 && src[start] === BACKSLASH && src[start + 1] === 0x4e) {
      this.bytes(PART.null);
      return;
    }
    for (let i = start; i < end; i++) {
      const byte = src[i]!;
      if (byte < 0x20 || byte === QUOTE || byte === BACKSLASH) {
        this.bytes(Buffer.from(JSON.stringify(unescaped(src, start, end).toString('utf8'))));
        return;
      }
    }
    this.ensure(end - start + 2);
    this.buf[this.at++] = QUOTE;
    this.at += src.copy(this.buf, this.at, start, end);
    this.buf[this.at++] = QUOTE;
  }
}

/**
 * Frames the rows of `COPY (outputRowsSql) TO STDOUT` (text format: id, custom_id, status,
 * request_id, body — tab-separated, one row a line) as OpenAI output lines:
 *   {"id":"batch_req_…","custom_id":…,"response":{"status_code":…,"request_id":…,"body":…},"error":null}
 * The body's bytes pass through (escapes undone, raw newlines blanked as above), so the database
 * builds no strings per row; rows are written straight into one buffer per chunk (a Buffer view
 * per field made the garbage collector the largest cost of a download).
 *
 * A row cut by a chunk end is never re-assembled: once its head (the four short columns before the
 * body) is complete, its body is copied out chunk by chunk as it arrives, so work and memory stay
 * proportional to the chunk whatever a row's size. (Growing the cut row with Buffer.concat per
 * chunk is quadratic: a 50 MB line took 21 s and stalled the event loop for seconds.)
 */
export class OutputRowsToJsonl extends Transform {
  /** Pieces of a cut row's head (copied: chunks may be reused), while its fourth tab is unseen. */
  private head: Buffer[] = [];
  /** Tabs among the pieces in `head`. */
  private headTabs = 0;
  /** A row's head is framed and its body is being copied out; its newline is not seen yet. */
  private inBody = false;
  /** The body piece copied last ended in the first byte of an escape. */
  private bodyEscape = false;
  /** Framed bytes not yet passed on: handed over in ~256 KB pieces, not one per socket read. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const out = new Out(chunk.length + 4096);
    try {
      let start = 0;
      while (start < chunk.length) {
        if (this.inBody) start = this.copyBody(chunk, start, out);
        else if (this.head.length > 0) start = this.finishHead(chunk, start, out);
        else {
          start = frameRows(chunk, start, out);
          if (start < chunk.length) start = this.beginCutRow(chunk, start, out);
        }
      }
    } catch (err) {
      done(err as Error);
      return;
    }
    if (out.at > 0) {
      this.pending.push(out.buf.subarray(0, out.at));
      this.pendingBytes += out.at;
    }
    if (this.pendingBytes < PIECE_BYTES) {
      done();
      return;
    }
    done(null, this.takePending());
  }

  override _flush(done: TransformCallback): void {
    if (this.inBody || this.head.length > 0) {
      done(new Error('COPY output ended inside a row'));
      return;
    }
    done(null, this.pendingBytes > 0 ? this.takePending() : undefined);
  }

  /** buf[start…] is a row without its newline: frames its head if complete, else keeps it. */
  private beginCutRow(buf: Buffer, start: number, out: Out): number {
    const t1 = buf.indexOf(TAB, start);
    const t2 = t1 === -1 ? -1 : buf.indexOf(TAB, t1 + 1);
    const t3 = t2 === -1 ? -1 : buf.indexOf(TAB, t2 + 1);
    const t4 = t3 === -1 ? -1 : buf.indexOf(TAB, t3 + 1);
    if (t4 !== -1) {
      frameHead(buf, start, t1, t2, t3, t4, out);
      this.inBody = true;
      return t4 + 1;
    }
    this.head.push(Buffer.from(buf.subarray(start)));
    this.headTabs = (t1 !== -1 ? 1 : 0) + (t2 !== -1 ? 1 : 0) + (t3 !== -1 ? 1 : 0);
    return buf.length;
  }

  /** Continues a cut head: once its fourth tab arrives, frames it (one small concat). */
  private finishHead(buf: Buffer, start: number, out: Out): number {
    let at = start;
    while (this.headTabs < 4) {
      const tab = buf.indexOf(TAB, at);
      const nl = buf.indexOf(NEWLINE, at);
      if (nl !== -1 && (tab === -1 || nl < tab)) {
        throw new Error('unexpected COPY row: expected a uuid and 4 more columns');
      }
      if (tab === -1) {
        this.head.push(Buffer.from(buf.subarray(start)));
        return buf.length;
      }
      this.headTabs++;
      at = tab + 1;
    }
    const head = Buffer.concat([...this.head, buf.subarray(start, at)]);
    this.head = [];
    this.headTabs = 0;
    const t1 = head.indexOf(TAB);
    const t2 = head.indexOf(TAB, t1 + 1);
    const t3 = head.indexOf(TAB, t2 + 1);
    frameHead(head, 0, t1, t2, t3, head.length - 1, out);
    this.inBody = true;
    return at;
  }

  /** Copies the body of the row being framed from buf[start…] up to its newline or the chunk's end. */
  private copyBody(buf: Buffer, start: number, out: Out): number {
    const nl = buf.indexOf(NEWLINE, start);
    const end = nl === -1 ? buf.length : nl;
    if (this.bodyEscape && start < end) {
      out.ensure(1);
      out.buf[out.at++] = DECODE[buf[start++]!]!;
      this.bodyEscape = false;
    }
    this.bodyEscape = out.unescaped(buf, start, end);
    if (nl === -1) return buf.length;
    out.bytes(PART.end);
    this.inBody = false;
    return nl + 1;
  }

  private takePending(): Buffer {
    const piece =
      this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return piece;
  }
}

/** Frames every complete row of buf from `start`; returns where the incomplete rest begins. */
function frameRows(buf: Buffer, start: number, out: Out): number {
  for (let nl = buf.indexOf(NEWLINE, start); nl !== -1; nl = buf.indexOf(NEWLINE, start)) {
    const t1 = buf.indexOf(TAB, start);
    const t2 = buf.indexOf(TAB, t1 + 1);
    const t3 = buf.indexOf(TAB, t2 + 1);
    const t4 = buf.indexOf(TAB, t3 + 1);
    if (t4 === -1 || t4 > nl) throw new Error('unexpected COPY row: expected a uuid and 4 more columns');
    frameHead(buf, start, t1, t2, t3, t4, out);
    out.unescaped(buf, t4 + 1, nl);
    out.bytes(PART.end);
    start = nl + 1;
  }
  return start;
}

/** Writes a row's line up to its body: `{"id":…,"custom_id":…,"response":{…,"body":`. */
function frameHead(
  buf: Buffer,
  start: number,
  t1: number,
  t2: number,
  t3: number,
  t4: number,
  out: Out,
): void {
  if (t1 - start !== 36) throw new Error('unexpected COPY row: expected a uuid and 4 more columns');
  out.bytes(PART.id);
  // The uuid without its dashes (8-4-4-4-12).
  out.bytes(buf, start, start + 8);
  out.bytes(buf, start + 9, start + 13);
  out.bytes(buf, start + 14, start + 18);
  out.bytes(buf, start + 19, start + 23);
  out.bytes(buf, start + 24, t1);
  out.bytes(PART.customId);
  out.jsonString(buf, t1 + 1, t2);
  out.bytes(PART.status);
  out.bytes(buf, t2 + 1, t3);
  out.bytes(PART.requestId);
  out.jsonString(buf, t3 + 1, t4);
  out.bytes(PART.body);
}
