import * as v from 'valibot';

/**
 * The types a setting can have. A kind checks a value (from the config file or the library, already
 * typed), reads one from text (a flag or an environment variable), and says what a valid value is,
 * for error messages and the README's settings table.
 */
export interface Kind<T> {
  /** Checks a typed value; its output is the setting's value. */
  readonly schema: v.GenericSchema<unknown, T>;
  /** Reads flag or environment text into a value for `schema` (text it cannot read passes as is, and fails). */
  readonly fromText: (text: string) => unknown;
  /** What a valid value is, completing "must be …": "an integer >= 1". */
  readonly expected: string;
  /** The README's name of the type: "integer", "boolean", "URL". */
  readonly label: string;
  /** For kinds that say more precisely what is wrong: "must list HTTP statuses …" (null: valid). */
  readonly problem?: (value: unknown) => string | null;
}

/** An integer in [min, max]; `expected` replaces the generic "an integer …" in messages. */
export function integer(range: { min: number; max?: number; expected?: string }): Kind<number> {
  const { min, max } = range;
  const checks: v.PipeItem<number, number, v.BaseIssue<unknown>>[] = [v.integer(), v.minValue(min)];
  if (max !== undefined) checks.push(v.maxValue(max));
  return {
    schema: v.pipe(v.number(), ...checks),
    fromText: (t) => (/^\s*-?\d+\s*$/.test(t) ? Number(t) : t),
    expected: range.expected ?? (max === undefined ? `an integer >= ${min}` : `an integer ${min}-${max}`),
    label: 'integer',
  };
}

/** A finite number >= min (fractions allowed). */
export function decimal(range: { min: number }): Kind<number> {
  return {
    schema: v.pipe(v.number(), v.finite(), v.minValue(range.min)),
    fromText: (t) => (/^\s*-?\d+(\.\d+)?\s*$/.test(t) ? Number(t) : t),
    expected: `a number >= ${range.min}`,
    label: 'number',
  };
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

/** true or false; text true/false/1/0/yes/no/on/off; in the config file also 1/0 (accepted before booleans were). */
export function boolean(): Kind<boolean> {
  return {
    schema: v.pipe(
      v.union([v.boolean(), v.picklist([0, 1])]),
      v.transform((b) => b === true || b === 1),
    ),
    fromText: (t) => {
      const s = t.trim().toLowerCase();
      return TRUE.has(s) ? true : FALSE.has(s) ? false : t;
    },
    expected: 'true or false',
    label: 'boolean',
  };
}

/** A string, optionally matching `pattern` (then `expected` says what it must be). */
export function text(
  options: { pattern?: RegExp; expected?: string; nonBlank?: boolean; label?: string } = {},
): Kind<string> {
  const checks: v.PipeItem<string, string, v.BaseIssue<unknown>>[] = [];
  if (options.nonBlank) checks.push(v.check((s) => s.trim() !== ''));
  if (options.pattern) checks.push(v.regex(options.pattern));
  return {
    schema: v.pipe(v.string(), ...checks),
    fromText: (t) => t,
    expected: options.expected ?? (options.nonBlank ? 'a non-empty string' : 'a string'),
    label: options.label ?? 'string',
  };
}

/** One of a few words. */
export function oneOf<const T extends string>(values: readonly T[]): Kind<T> {
  return {
    schema: v.picklist(values),
    fromText: (t) => t,
    expected: `one of ${values.join(', ')}`,
    label: 'word',
  };
}

/**
 * A value of a type of its own, checked by `problem` (null when valid, else what is wrong as a
 * complement of "must": "must list HTTP statuses (integers 100-599)").
 */
export function checked<T>(
  problem: (value: unknown) => string | null,
  expected: string,
  label: string,
): Kind<T> {
  return {
    schema: v.pipe(
      v.unknown(),
      v.rawCheck(({ dataset, addIssue }) => {
        const p = dataset.typed ? problem(dataset.value) : 'is not valid';
        if (p !== null) addIssue({ message: p });
      }),
    ) as unknown as v.GenericSchema<unknown, T>,
    fromText: (t) => {
      try {
        return JSON.parse(t);
      } catch {
        return t;
      }
    },
    expected,
    label,
    problem,
  };
}

/** An http(s) URL; with `orMock`, also the word "mock" (the built-in mock upstream). */
export function httpUrl(options: { orMock?: boolean } = {}): Kind<string> {
  return {
    schema: v.pipe(
      v.string(),
      v.check((s) => (options.orMock === true && s === 'mock') || isHttpUrl(s)),
    ),
    fromText: (t) => t,
    expected: options.orMock ? 'an http(s) URL or "mock"' : 'an http(s) URL',
    label: options.orMock ? 'URL or mock' : 'URL',
  };
}

/** A postgres:// (or postgresql://) connection URL. */
export function postgresUrl(): Kind<string> {
  return text({ pattern: /^postgres(ql)?:\/\//, expected: 'a postgres:// URL', label: 'URL' });
}

/** The name of an environment variable (the config file names secrets this way, never holds them). */
export function envName(): Kind<string> {
  return text({
    pattern: /^[A-Za-z_][A-Za-z0-9_]*$/,
    expected: 'the name of an environment variable',
    label: 'variable name',
  });
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}
