import { promisify } from 'node:util';
import { deflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib';

/**
 * How a body of finished work is stored compressed (issue 14, migration 0022): one version byte
 * (1), the decoded body's length in UTF-8 bytes (4 bytes, big-endian: SQL measures output files
 * with it, zippedBytesSql, without inflating), then raw deflate at level 1 with a shared
 * dictionary. Pure: the background pass (src/db/compress.ts) encodes, every body read decodes.
 *
 * Chosen by measurement (2,000–3,000 bodies, three interleaved rounds, node:zlib, load ~15 on
 * 2 cores, so the CPU figures are relative): a real chat.completion answer of 1,744 B (OpenAI's
 * full framing around 1,150 B of English prose) deflates to 848 B without a dictionary, 727 B with
 * the first dictionary (bench/storage.ts's: the bare chat framing and 40 common words) and 603 B
 * with this one (the full OpenAI and Anthropic framings, usage details, 80 common words) at level 1,
 * 584 B at level 6. Level 6 costs ~1.7× level 1's CPU (358 against 208 µs an answer) for 3 % fewer
 * bytes; the pass shares the daemons' two cores with dispatch, so level 1. A 1,022 B chat request
 * keeps 433 B (42 %). Brotli (quality 5) is no smaller at this size and costs about twice the CPU
 * (bench/storage.ts). Inflate: ~50 µs an answer.
 */

/** The framing of chat requests and answers, most frequent last (deflate reaches the end soonest). */
export const BODY_DICTIONARY = Buffer.from(
  '{"type":"message","role":"assistant","model":"claude-","content":[{"type":"text","text":""}],' +
    '"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":,"cache_creation_input_tokens":0,' +
    '"cache_read_input_tokens":0,"output_tokens":,"service_tier":"standard"}}' +
    '{"model":"","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user",' +
    '"content":""}],"max_tokens":,"temperature":' +
    ' the of and to in a is that for it as with be on not this are by at from or have an they which one ' +
    'you were all we can has there their been if more when will would should could about into than them ' +
    'these other some what only its also after use how our out time two first may then such each ' +
    '{"id":"chatcmpl-","object":"chat.completion","created":,"model":"gpt-4o-mini-2024-07-18","choices":' +
    '[{"index":0,"message":{"role":"assistant","content":"","refusal":null,"annotations":[]},' +
    '"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":,"completion_tokens":,' +
    '"total_tokens":,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},' +
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,' +
    '"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_"}',
);

const VERSION = 1;
const HEADER = 5;
const OPTIONS = { dictionary: BODY_DICTIONARY, level: 1 };
const deflateAsync = promisify(deflateRaw);

function framed(length: number, deflated: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + deflated.length);
  out[0] = VERSION;
  out.writeUInt32BE(length, 1);
  deflated.copy(out, HEADER);
  return out;
}

/** A body compressed, on this thread (tests, benches). */
export function zipBodySync(body: string): Buffer {
  const bytes = Buffer.from(body, 'utf8');
  return framed(bytes.length, deflateRawSync(bytes, OPTIONS));
}

/** A body compressed in libuv's thread pool: the event loop (a daemon's dispatch) is not held. */
export async function zipBody(body: string): Promise<Buffer> {
  const bytes = Buffer.from(body, 'utf8');
  return framed(bytes.length, await deflateAsync(bytes, OPTIONS));
}

/** The body's UTF-8 bytes. */
export function unzipBodyBytes(zipped: Buffer): Buffer {
  if (zipped.length < HEADER || zipped[0] !== VERSION) {
    throw new Error(`stored body: unknown compression (version ${zipped[0]})`);
  }
  const out = inflateRawSync(zipped.subarray(HEADER), { dictionary: BODY_DICTIONARY });
  if (out.length !== zipped.readUInt32BE(1))
    throw new Error('stored body: decoded length differs from its header');
  return out;
}

/** The body as text. */
export function unzipBody(zipped: Buffer): string {
  return unzipBodyBytes(zipped).toString('utf8');
}

/** The stored text of a body that is either plain or compressed (whichever column is set). */
export function storedBody(plain: string | null, zipped: Buffer | null): string | null {
  return zipped !== null && zipped !== undefined ? unzipBody(zipped) : plain;
}

/** SQL: a compressed body's decoded length in bytes, from its header (nothing inflated). */
export function zippedBytesSql(column: string): string {
  return `((get_byte(${column}, 1)::bigint << 24) | (get_byte(${column}, 2) << 16) | (get_byte(${column}, 3) << 8) | get_byte(${column}, 4))`;
}

/**
 * SQL: a compressed body as it travels inside a JSONL line that SQL composes: its bytes in hex
 * between two U+0001 marks (no JSON line holds a raw U+0001: JSON escapes control characters),
 * replaced by the inflated body on the way out (src/store/compression-splice.ts).
 */
export function zippedInLineSql(column: string): string {
  return `chr(1) || encode(${column}, 'hex') || chr(1)`;
}
