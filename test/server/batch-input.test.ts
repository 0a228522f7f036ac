import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BatchInputLine, BatchInputParser } from '../../src/domain/batch-input.js';
import { ValidationError } from '../../src/domain/errors.js';
import { memberSpan } from '../../src/domain/json-members.js';

const limits = { maxLines: 100, maxBytes: 1 << 20 };

function parseAll(bytes: Buffer, cuts: number[] = []): BatchInputLine[] {
  const p = new BatchInputParser(limits);
  const out: BatchInputLine[] = [];
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    out.push(...p.push(bytes.subarray(at, cut)));
    at = cut;
  }
  out.push(...p.push(bytes.subarray(at)));
  out.push(...p.end());
  return out;
}

function issueOf(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).issues[0]!;
  }
  throw new Error('expected a ValidationError');
}

const line = (id: string, body: string) =>
  `{"custom_id":${JSON.stringify(id)},"method":"POST","url":"/v1/chat/completions","body":${body}}`;

describe('BatchInputParser', () => {
  it('returns each body as the exact text of the line, whatever the chunking', () => {
    const bodies = [
      '{"model":"m","messages":[{"role":"user","content":"é 🚀 \\"quoted\\" \\\\ back"}]}',
      '{ "model" : "m2" ,"nested":{"a":[1,{"b":"}]"}]},"x":1e3}',
      '{"model":"m","s":"\\u0041\\n"}',
    ];
    const text = `\ufeff${bodies.map((b, i) => line(`c${i}`, b)).join('\r\n')}`;
    const bytes = Buffer.from(text);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 8 }), (cuts) => {
        const lines = parseAll(bytes, cuts);
        expect(lines.map((l) => l.body)).toEqual(bodies);
        expect(lines.map((l) => l.line)).toEqual([1, 2, 3]);
        expect(lines.map((l) => l.model)).toEqual(['m', 'm2', 'm']);
      }),
      { numRuns: 200 },
    );
  });

  it('takes the last duplicate key, as JSON.parse does, and ignores keys that merely contain "body"', () => {
    const text =
      '{"custom_id":"a","nobody":{"x":1},"body":{"model":"old"},"method":"POST","url":"/v1/embeddings","body":{"model":"new"}}';
    const [l] = parseAll(Buffer.from(text));
    expect(l!.body).toBe('{"model":"new"}');
    expect(l!.model).toBe('new');
    expect(memberSpan('{"a":"x\\"}","body":[1]}', 'body')).toEqual([19, 22]);
  });

  it('reads a compact line ending in its body whole, and any other form member by member, to the same text', () => {
    const spaced = '{ "model": "m", "n": 1.0 }';
    const texts = [
      // Compact, body last: one JSON.parse of the line (readWhole).
      line('a', '{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
      // A body whose JSON.stringify differs from its text: the member scanner keeps the text.
      line('b', spaced),
      line('c', '{"model":"m","s":"\\u00e9"}'),
      // A "body": member nested in another member whose text equals the real body's stringify.
      `{"custom_id":"d","method":"POST","url":"/v1/chat/completions","x":{"body":{"model":"m","n":1}},"body":${spaced}}`,
      // Body not last; a custom_id that ends like a body.
      '{"body":{"model":"m"},"custom_id":"e","method":"POST","url":"/v1/chat/completions"}',
      line('f"body":{"model":"m"}', '{"model":"m"}'),
    ];
    const lines = parseAll(Buffer.from(texts.join('\n')));
    expect(lines.map((l) => l.body)).toEqual([
      '{"model":"m","messages":[{"role":"user","content":"hi"}]}',
      spaced,
      '{"model":"m","s":"\\u00e9"}',
      spaced,
      '{"model":"m"}',
      '{"model":"m"}',
    ]);
    expect(lines.map((l) => l.customId)).toEqual(['a', 'b', 'c', 'd', 'e', 'f"body":{"model":"m"}']);
    expect(lines.every((l) => l.model === 'm' && l.url === '/v1/chat/completions')).toBe(true);
    // The same issues either way: a compact line with a bad method, a spaced one with a bad url.
    expect(issueOf(() => parseAll(Buffer.from(line('g', '{"model":"m"}').replace('POST', 'GET')))).code).toBe(
      'invalid_method',
    );
    expect(issueOf(() => parseAll(Buffer.from(line('h', '{"model":""}')))).code).toBe('missing_model');
    expect(issueOf(() => parseAll(Buffer.from(line('i', '[1]')))).code).toBe('invalid_body');
    // Nested deeper than JSON.stringify's stack (JSON.parse reads it): read by the member scanner to
    // the same text, never a RangeError out of the parser.
    const deep = `{"model":"m","x":${'['.repeat(200_000)}${']'.repeat(200_000)}}`;
    expect(parseAll(Buffer.from(`${line('j', '{"model":"m"}')}\n${line('k', deep)}`))[1]!.body).toBe(deep);
  });

  it('names the line of each kind of problem', () => {
    const ok = line('a', '{"model":"m"}');
    const check = (text: string, code: string, lineNo?: number) => {
      const issue = issueOf(() => parseAll(Buffer.from(text)));
      expect(issue.code).toBe(code);
      if (lineNo !== undefined) expect(issue.line).toBe(lineNo);
    };
    check(`${ok}\n{bad`, 'invalid_json_line', 2);
    check(`${ok}\n\n"str"`, 'invalid_json_line', 3);
    check(`${ok}\n${ok}`, 'duplicate_custom_id', 2);
    check(line('', '{"model":"m"}'), 'missing_custom_id', 1);
    check(
      '{"custom_id":5,"method":"POST","url":"/v1/embeddings","body":{"model":"m"}}',
      'invalid_custom_id',
      1,
    );
    check(ok.replace('"POST"', '"post"'), 'invalid_method', 1);
    check(ok.replace('/v1/chat/completions', '/v2/x'), 'unknown_endpoint', 1);
    check(
      `${ok}\n${line('b', '{"model":"m"}').replace('/v1/chat/completions', '/v1/embeddings')}`,
      'url_mismatch',
      2,
    );
    check(line('a', '[1]'), 'invalid_body', 1);
    check(line('a', '{"model":""}'), 'missing_model', 1);
    check(line('a', '{"model":7}'), 'missing_model', 1);
    check(line('a', '{"model":"m",}'), 'invalid_json_line', 1);
    check(`${ok} trailing`, 'invalid_json_line', 1);
    check('{"custom_id":"a" "method":"POST"}', 'invalid_json_line', 1);
    check(
      '{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m"}',
      'invalid_json_line',
      1,
    );
    check('', 'empty_file');
    check('\n\r\n', 'empty_file');
  });

  it('reads only the top-level model of bodies when asked not to validate them', () => {
    const p = new BatchInputParser(limits, { validateBodies: false });
    const [l] = p.push(Buffer.from(`${line('a', '{"x":{"model":"inner"},"model":"outer","y":[1,]}')}\n`));
    expect(l!.model).toBe('outer');
    expect(l!.body).toBe('{"x":{"model":"inner"},"model":"outer","y":[1,]}');
    expect(issueOf(() => p.push(Buffer.from(`${line('b', '{"x":1}')}\n`))).code).toBe('missing_model');
  });

  it('enforces the line and byte limits while streaming', () => {
    const p = new BatchInputParser({ maxLines: 2, maxBytes: 1000 });
    const ok = (id: string) => Buffer.from(`${line(id, '{"model":"m"}')}\n`);
    expect(p.push(ok('a'))).toHaveLength(1);
    expect(p.push(ok('b'))).toHaveLength(1);
    expect(issueOf(() => p.push(ok('c')))).toMatchObject({ code: 'too_many_tasks', line: 3 });
    const q = new BatchInputParser({ maxLines: 100, maxBytes: 100 });
    expect(issueOf(() => q.push(Buffer.alloc(101, 0x20))).code).toBe('file_too_large');
  });

  it('counts embedding inputs across an embeddings file, with and without validating bodies', () => {
    const emb = (id: string, input: string) =>
      Buffer.from(
        `{"custom_id":"${id}","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":${input}}}\n`,
      );
    for (const validateBodies of [true, false]) {
      const p = new BatchInputParser({ ...limits, maxEmbeddingInputs: 6 }, { validateBodies });
      expect(p.push(emb('a', '"one"'))).toHaveLength(1); // 1
      expect(p.push(emb('b', '["x","y","z"]'))).toHaveLength(1); // 4
      expect(p.push(emb('c', '[1,2,3,4]'))).toHaveLength(1); // token ids: one input, 5
      expect(issueOf(() => p.push(emb('d', '[[1,2],[3]]')))).toMatchObject({
        code: 'too_many_embedding_inputs',
        param: 'body.input',
        line: 4,
      });
    }
    // Other endpoints' inputs are not counted.
    const chat = new BatchInputParser({ ...limits, maxEmbeddingInputs: 1 });
    expect(
      chat.push(Buffer.from(`${line('a', '{"model":"m","input":[1,2]}')}\n${line('b', '{"model":"m"}')}\n`)),
    ).toHaveLength(2);
  });

  it('refuses invalid UTF-8 even when a character is split across chunks only if it is really broken', () => {
    const text = Buffer.from(line('é', '{"model":"🚀"}'));
    // Split inside the multi-byte characters: still valid.
    const lines = parseAll(text, [15, 16, text.length - 4]);
    expect(lines[0]!.customId).toBe('é');
    const broken = Buffer.concat([text.subarray(0, 15), Buffer.from([0xc3]), text.subarray(16)]);
    expect(issueOf(() => parseAll(broken)).code).toBe('invalid_utf8');
  });
});

describe('CopyTextToJsonl', () => {
  it('undoes COPY text escapes and blanks raw newlines, whatever the chunking', async () => {
    const { CopyTextToJsonl } = await import('../../src/store/files/copy-text-decode.js');
    // COPY text of two rows: {"a":"x\\"y"} with a raw newline inside, then {"t":"tab\ttab"}.
    const copied = Buffer.from('{"a":\\n"x\\\\"y"}\n{"t":"tab\\ttab","s":"\\\\\\\\"}\n');
    const expected = '{"a": "x\\"y"}\n{"t":"tab\ttab","s":"\\\\"}\n';
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: copied.length }), { maxLength: 6 }), (cuts) => {
        const decoder = new CopyTextToJsonl();
        const out: Buffer[] = [];
        decoder.on('data', (d: Buffer) => out.push(d));
        let at = 0;
        for (const cut of [...cuts].sort((a, b) => a - b)) {
          decoder.write(copied.subarray(at, cut));
          at = cut;
        }
        decoder.write(copied.subarray(at));
        decoder.end();
        expect(Buffer.concat(out).toString()).toBe(expected);
      }),
      { numRuns: 200 },
    );
  });
});

describe('OutputRowsToJsonl', () => {
  it('frames COPY rows as output lines, whatever the chunking', async () => {
    const { OutputRowsToJsonl } = await import('../../src/store/files/copy-text-decode.js');
    const id1 = '0123abcd-0000-4000-8000-00000000aa11';
    const id2 = '0123abcd-0000-4000-8000-00000000bb22';
    // Two rows as COPY text prints them: tabs between columns, \N for NULL, escapes for \, tab, newline.
    const copied = Buffer.from(
      `${id1}\tc"1\\\\x\t200\tup-1\t{"x":\\n"t\\\\tq é"}\n` + `${id2}\t\\N\t201\t\\N\t{"y":[1,\\t2]}\n`,
    );
    const expected =
      '{"id":"batch_req_0123abcd000040008000' +
      '00000000aa11","custom_id":"c\\"1\\\\x","response":{"status_code":200,"request_id":"up-1","body":{"x": "t\\tq é"}},"error":null}\n' +
      '{"id":"batch_req_0123abcd000040008000' +
      '00000000bb22","custom_id":null,"response":{"status_code":201,"request_id":null,"body":{"y":[1,\t2]}},"error":null}\n';
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: copied.length }), { maxLength: 6 }), (cuts) => {
        const framer = new OutputRowsToJsonl();
        const out: Buffer[] = [];
        framer.on('data', (d: Buffer) => out.push(d));
        let at = 0;
        for (const cut of [...cuts].sort((a, b) => a - b)) {
          framer.write(copied.subarray(at, cut));
          at = cut;
        }
        framer.write(copied.subarray(at));
        framer.end();
        const text = Buffer.concat(out).toString();
        expect(text).toBe(expected);
        for (const line of text.trimEnd().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
      }),
      { numRuns: 200 },
    );
  });

  it('frames rows fed one byte at a time (every escape and column cut)', async () => {
    const { OutputRowsToJsonl } = await import('../../src/store/files/copy-text-decode.js');
    const id = '0123abcd-0000-4000-8000-00000000aa11';
    const copied = Buffer.from(`${id}\tc\\\\1\t200\tup\t{"a":"\\\\\\\\","b":\\n\\t"x"}\n`.repeat(3));
    const whole = new OutputRowsToJsonl();
    const expected: Buffer[] = [];
    whole.on('data', (d: Buffer) => expected.push(d));
    whole.end(copied);
    const framer = new OutputRowsToJsonl();
    const out: Buffer[] = [];
    framer.on('data', (d: Buffer) => out.push(d));
    for (let i = 0; i < copied.length; i++) framer.write(copied.subarray(i, i + 1));
    framer.end();
    const text = Buffer.concat(out).toString();
    expect(text).toBe(Buffer.concat(expected).toString());
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) {
      expect(JSON.parse(line)).toMatchObject({ custom_id: 'c\\1', response: { body: { a: '\\', b: 'x' } } });
    }
  });

  it('copies a 30 MB row out in bounded pieces as it arrives, never re-assembling it', async () => {
    const { OutputRowsToJsonl } = await import('../../src/store/files/copy-text-decode.js');
    const id = '0123abcd-0000-4000-8000-00000000aa11';
    // A body with an escape every 1,000 bytes, so escapes fall across chunk ends too.
    const unit = `${'x'.repeat(998)}\\\\`;
    const body = `{"s":"${unit.repeat(30_000)}"}`;
    const copied = Buffer.from(`${id}\tbig\t200\t\\N\t${body}\n${id}\tsmall\t200\t\\N\t{}\n`);
    const framer = new OutputRowsToJsonl();
    const pieces: number[] = [];
    let bytes = 0;
    const tail: Buffer[] = [];
    framer.on('data', (d: Buffer) => {
      pieces.push(d.length);
      bytes += d.length;
      if (tail.length < 2 || d.length < 1000) tail.push(d);
    });
    // 64 KB reads, as a socket delivers them, cutting escapes too. Before the big row's newline
    // arrives, nearly all of its body has been passed on already (it used to wait for the newline).
    const rowEnd = copied.indexOf('\n');
    for (let at = 0; at < rowEnd; at += 65_537)
      framer.write(copied.subarray(at, Math.min(at + 65_537, rowEnd)));
    await new Promise((r) => setImmediate(r));
    expect(bytes).toBeGreaterThan(body.length - 512 * 1024);
    framer.write(copied.subarray(rowEnd));
    framer.end();
    await new Promise((r) => framer.once('end', r));
    // Every piece is bounded (≈256 KB plus one chunk), whatever the row's size.
    expect(Math.max(...pieces)).toBeLessThan(512 * 1024);
    const expectedBytes =
      `{"id":"batch_req_${id.replaceAll('-', '')}","custom_id":"big","response":{"status_code":200,"request_id":null,"body":`
        .length +
      body.length -
      30_000 +
      '},"error":null}\n'.length +
      `{"id":"batch_req_${id.replaceAll('-', '')}","custom_id":"small","response":{"status_code":200,"request_id":null,"body":{}},"error":null}\n`
        .length;
    expect(bytes).toBe(expectedBytes);
  });
});
