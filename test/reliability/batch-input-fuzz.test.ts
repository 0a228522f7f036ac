import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BatchInputLine, BatchInputParser } from '../../src/domain/batch-input.js';
import { ValidationError } from '../../src/domain/errors.js';

/**
 * Property-based fuzz of the JSONL reader (src/domain/batch-input.ts). Bounded runs, so the file
 * stays well under a few seconds on 2 cores; a failure prints the shrunk counterexample and seed.
 */

const LIMITS = { maxLines: 1000, maxBytes: 1 << 20 };

type Outcome = { ok: true; lines: BatchInputLine[] } | { ok: false; error: ValidationError };

/** Feeds `bytes` cut at `cuts`; any throw other than a ValidationError escapes (and fails the property). */
function run(
  bytes: Uint8Array,
  cuts: number[],
  limits = LIMITS,
  options: { validateBodies?: boolean } = {},
): Outcome {
  const parser = new BatchInputParser(limits, options);
  const lines: BatchInputLine[] = [];
  let at = 0;
  try {
    for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
      lines.push(...parser.push(bytes.subarray(at, cut)));
      at = cut;
    }
    lines.push(...parser.push(bytes.subarray(at)));
    lines.push(...parser.end());
    return { ok: true, lines };
  } catch (err) {
    if (err instanceof ValidationError) return { ok: false, error: err };
    throw err;
  }
}

function physicalLines(bytes: Uint8Array): number {
  let n = 1;
  for (const b of bytes) if (b === 0x0a) n++;
  return n;
}

const cutsFor = (max: number) => fc.array(fc.integer({ min: 0, max }), { maxLength: 6 });

/** A JSON object usable as a request body: random members plus a non-blank string model. */
const body = fc
  .tuple(
    fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }),
    fc.string({ minLength: 1, maxLength: 12 }).filter((m) => m.trim() !== ''),
    fc.boolean(),
  )
  .map(([members, model, modelFirst]) => {
    const { model: _drop, ...rest } = members;
    return modelFirst ? { model, ...rest } : { ...rest, model };
  });

const validFile = fc
  .uniqueArray(
    fc.record({
      customId: fc.string({ minLength: 1, maxLength: 16 }),
      body,
      // null: no blank line before; else the blank line's content (spaces and tabs only).
      blankBefore: fc.constantFrom(null, null, '', '  ', '\t'),
      spaced: fc.boolean(),
    }),
    { minLength: 1, maxLength: 12, selector: (l) => l.customId },
  )
  .chain((lines) =>
    fc.record({
      lines: fc.constant(lines),
      bom: fc.boolean(),
      crlf: fc.boolean(),
      finalNewline: fc.boolean(),
      cuts: cutsFor(4096),
    }),
  );

function render(f: {
  lines: { customId: string; body: unknown; blankBefore: string | null; spaced: boolean }[];
  bom: boolean;
  crlf: boolean;
  finalNewline: boolean;
}): { text: string; expectedLines: number[]; bodies: string[] } {
  const eol = f.crlf ? '\r\n' : '\n';
  let text = f.bom ? '\ufeff' : '';
  let line = 1;
  const expectedLines: number[] = [];
  const bodies: string[] = [];
  f.lines.forEach((l, i) => {
    if (i > 0) text += eol;
    if (l.blankBefore !== null) {
      text += l.blankBefore + eol;
      line++;
    }
    const b = l.spaced ? JSON.stringify(l.body, null, 1).replace(/\n/g, ' ') : JSON.stringify(l.body);
    bodies.push(b);
    const sep = l.spaced ? ' , ' : ',';
    text += `{"custom_id":${JSON.stringify(l.customId)}${sep}"method":"POST"${sep}"url":"/v1/chat/completions"${sep}"body":${b}}`;
    expectedLines.push(line);
    line++;
  });
  if (f.finalNewline) text += eol;
  return { text, expectedLines, bodies };
}

describe('JSONL reader fuzz', () => {
  it('never throws anything but a ValidationError on arbitrary bytes, and its line numbers exist', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 400 }),
      // Near-valid input finds deeper paths than noise: mutate a good line.
      fc
        .tuple(
          fc.integer({ min: 1, max: 4 }),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        )
        .map(([n, flips]) => {
          const good = Array.from(
            { length: n },
            (_, i) =>
              `{"custom_id":"c${i}","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x\\"}"}}`,
          ).join('\n');
          const b = Buffer.from(good);
          for (const [at, v] of flips) b[at % b.length] = v;
          return new Uint8Array(b);
        }),
    );
    fc.assert(
      fc.property(bytes, cutsFor(400), (input, cuts) => {
        const out = run(input, cuts);
        if (out.ok) {
          expect(out.lines.length).toBeGreaterThan(0);
          const physical = Buffer.from(input).toString('utf8').split('\n');
          for (const l of out.lines) {
            expect(l.line).toBeLessThanOrEqual(physicalLines(input));
            // Differential check against JSON.parse: an accepted line is a JSON object whose
            // fields are exactly what the reader returned.
            const text = physical[l.line - 1]!.replace(/^\ufeff/, '').replace(/\r$/, '');
            const whole = JSON.parse(text) as Record<string, unknown>;
            expect(whole.custom_id).toBe(l.customId);
            expect(whole.method).toBe('POST');
            expect(JSON.stringify(JSON.parse(l.body))).toBe(JSON.stringify(whole.body));
          }
          return;
        }
        const issue = out.error.issues[0]!;
        expect(issue.code).toMatch(/^[a-z0-9_]+$/);
        expect(issue.message.length).toBeGreaterThan(0);
        if (issue.line !== undefined) {
          expect(issue.line).toBeGreaterThanOrEqual(1);
          expect(issue.line).toBeLessThanOrEqual(physicalLines(input));
          expect(out.error.message).toContain(`line ${issue.line}`);
          if (issue.code === 'invalid_json_line') {
            // Refused as not JSON: JSON.parse must agree (not an object, or not JSON at all).
            const text = Buffer.from(input)
              .toString('utf8')
              .split('\n')
              [issue.line - 1]!.replace(/^\ufeff/, '')
              .replace(/\r$/, '');
            let value: unknown;
            try {
              value = JSON.parse(text);
            } catch {
              return;
            }
            const body = (value as { body?: unknown } | null)?.body;
            const isObject = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);
            expect(isObject(value) && isObject(body)).toBe(false);
          }
        }
      }),
      { numRuns: 1500 },
    );
  });

  it('differs without body validation only on bodies that are not JSON (the store checks those)', () => {
    // The server reads uploads with validateBodies: false and lets the store parse each body once.
    const mutated = fc
      .tuple(
        fc.integer({ min: 1, max: 3 }),
        fc.array(
          fc.tuple(fc.nat(), fc.constantFrom(0x22, 0x2c, 0x3a, 0x7b, 0x7d, 0x5b, 0x5d, 0x20, 0x78, 0x5c)),
          {
            maxLength: 3,
          },
        ),
      )
      .map(([n, flips]) => {
        const good = Array.from(
          { length: n },
          (_, i) =>
            `{"custom_id":"c${i}","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":["a",{"b":1}]}}`,
        ).join('\n');
        const b = Buffer.from(good);
        for (const [at, v] of flips) b[at % b.length] = v;
        return new Uint8Array(b);
      });
    fc.assert(
      fc.property(mutated, cutsFor(300), (input, cuts) => {
        const strict = run(input, cuts);
        const lax = run(input, cuts, LIMITS, { validateBodies: false });
        if (strict.ok) {
          // Whatever the strict reader accepts, the lax one accepts identically.
          expect(lax.ok && lax.lines).toEqual(strict.lines);
          return;
        }
        if (!lax.ok) return;
        // The lax reader accepted a file the strict one refused: only a body that is not JSON may
        // explain it, and the line the strict reader named is that line.
        const bad = lax.lines.find((l) => l.line === strict.error.issues[0]!.line);
        expect(bad, strict.error.message).toBeDefined();
        expect(() => JSON.parse(bad!.body)).toThrow();
      }),
      { numRuns: 800 },
    );
  });

  it('round-trips valid files: same ids, bodies byte for byte, right line numbers, any chunking', () => {
    fc.assert(
      fc.property(validFile, (f) => {
        const { text, expectedLines, bodies } = render(f);
        const out = run(Buffer.from(text), f.cuts);
        if (!out.ok) throw new Error(`valid file refused: ${out.error.message}\n${text}`);
        expect(out.lines.map((l) => l.customId)).toEqual(f.lines.map((l) => l.customId));
        expect(out.lines.map((l) => l.line)).toEqual(expectedLines);
        expect(out.lines.map((l) => l.body)).toEqual(bodies);
        expect(out.lines.map((l) => l.model)).toEqual(
          f.lines.map((l) => (l.body as { model: string }).model),
        );
      }),
      { numRuns: 400 },
    );
  });

  it('names the right line when one line of a valid file is broken', () => {
    const breakers: [string, (line: string) => string][] = [
      ['invalid_json_line', (l) => l.slice(0, -1)],
      ['invalid_json_line', (l) => `${l}x`],
      ['invalid_json_line', () => '[]'],
      ['invalid_json_line', () => 'null'],
      ['missing_custom_id', (l) => l.replace(/"custom_id":("(?:[^"\\]|\\.)*")/, '"custom_id":""')],
      ['invalid_custom_id', (l) => l.replace(/"custom_id":("(?:[^"\\]|\\.)*")/, '"custom_id":{"a":1}')],
      ['invalid_method', (l) => l.replace('"method":"POST"', '"method":7')],
      [
        'unknown_endpoint',
        (l) => l.replace('"url":"/v1/chat/completions"', '"url":["/v1/chat/completions"]'),
      ],
      ['url_mismatch', (l) => l.replace('"url":"/v1/chat/completions"', '"url":"/v1/embeddings"')],
      ['invalid_body', (l) => l.replace(/"body":.*\}$/, '"body":"a string"}')],
      ['missing_model', (l) => l.replace(/"body":.*\}$/, '"body":{"model":null}}')],
    ];
    fc.assert(
      fc.property(
        validFile.filter((f) => !f.lines.some((l) => l.spaced)),
        fc.nat(),
        fc.nat(breakers.length - 1),
        (f, which, how) => {
          const target = which % f.lines.length;
          const [code, breakLine] = breakers[how]!;
          // url_mismatch needs an earlier line to set the file's endpoint.
          if (code === 'url_mismatch' && target === 0) return;
          const { text, expectedLines } = render(f);
          const physical = text.split(f.crlf ? '\r\n' : '\n');
          const at = expectedLines[target]! - 1;
          const original = physical[at]!;
          const hasBom = at === 0 && original.startsWith('\ufeff');
          physical[at] = (hasBom ? '\ufeff' : '') + breakLine(hasBom ? original.slice(1) : original);
          const out = run(Buffer.from(physical.join(f.crlf ? '\r\n' : '\n')), f.cuts);
          expect(out.ok).toBe(false);
          if (out.ok) return;
          expect(out.error.issues[0]).toMatchObject({ code, line: expectedLines[target] });
        },
      ),
      { numRuns: 250 },
    );
  });

  it('counts lines and bytes exactly at the limits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 2 }), (maxLines, extra) => {
        const lines = Array.from(
          { length: maxLines + extra },
          (_, i) => `{"custom_id":"c${i}","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`,
        );
        const bytes = Buffer.from(lines.join('\n'));
        const out = run(bytes, [], { maxLines, maxBytes: bytes.length });
        if (extra === 0) {
          expect(out.ok && out.lines.length).toBe(maxLines);
        } else {
          expect(!out.ok && out.error.issues[0]).toMatchObject({
            code: 'too_many_tasks',
            line: maxLines + 1,
          });
        }
        const tight = run(bytes, [], { maxLines: 1000, maxBytes: bytes.length - 1 });
        expect(!tight.ok && tight.error.issues[0]!.code).toBe('file_too_large');
      }),
      { numRuns: 60 },
    );
  });
});
