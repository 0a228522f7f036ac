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
