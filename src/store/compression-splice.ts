import { Transform, type TransformCallback } from 'node:stream';
import { unzipBodyBytes } from '../domain/body-codec.js';

const MARK = 0x01;
const NEWLINE = 0x0a;
const RETURN = 0x0d;
const SPACE = 0x20;

/**
 * Puts compressed bodies back into JSONL composed by PostgreSQL: SQL writes a compressed body as
 * its bytes in hex between two U+0001 marks (zippedInLineSql, src/domain/body-codec.ts); this
 * replaces each such run with the inflated body. A JSON line never holds a raw U+0001 (JSON escapes
 * control characters; COPY passes U+0001 through unescaped), so a chunk without one passes as it
 * is, found by one indexOf. Raw newlines and carriage returns in an inflated body can only be JSON
 * whitespace (pretty-printed answers): they become spaces, as CopyTextToJsonl does for stored text.
 * Memory: one compressed body at a time (the hex of a body cut by a chunk end is kept until its
 * closing mark), besides the chunk.
 */
export class InflateZippedBodies extends Transform {
  /** Hex pieces of the body being read, while its closing mark is unseen; null outside one. */
  private hex: Buffer[] | null = null;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (this.hex === null && chunk.indexOf(MARK) === -1) {
      done(null, chunk);
      return;
    }
    const out: Buffer[] = [];
    try {
      let start = 0;
      while (start < chunk.length) {
        const mark = chunk.indexOf(MARK, start);
        if (this.hex === null) {
          if (mark === -1) {
            out.push(chunk.subarray(start));
            break;
          }
          if (mark > start) out.push(chunk.subarray(start, mark));
          this.hex = [];
        } else {
          if (mark === -1) {
            this.hex.push(Buffer.from(chunk.subarray(start)));
            break;
          }
          this.hex.push(chunk.subarray(start, mark));
          out.push(inflated(Buffer.concat(this.hex)));
          this.hex = null;
        }
        start = mark + 1;
      }
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, out.length === 1 ? out[0] : Buffer.concat(out));
  }

  override _flush(done: TransformCallback): void {
    done(this.hex === null ? null : new Error('JSONL ended inside a compressed body'));
  }
}

/** The body whose compressed bytes `hex` spells, with raw newlines blanked. */
function inflated(hex: Buffer): Buffer {
  const body = unzipBodyBytes(Buffer.from(hex.toString('latin1'), 'hex'));
  for (let at = body.indexOf(NEWLINE); at !== -1; at = body.indexOf(NEWLINE, at + 1)) body[at] = SPACE;
  for (let at = body.indexOf(RETURN); at !== -1; at = body.indexOf(RETURN, at + 1)) body[at] = SPACE;
  return body;
}
