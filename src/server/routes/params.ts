import { ApiError } from '../http.js';

/** An integer query parameter within bounds, or the fallback when absent. */
export function intParam(
  q: URLSearchParams,
  name: string,
  { min, max, fallback }: { min: number; max: number; fallback: number },
): number {
  const raw = q.get(name);
  if (raw === null || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ApiError(400, `${name} must be an integer from ${min} to ${max}.`, {
      code: `invalid_${name}`,
      param: name,
    });
  }
  return n;
}

/** A query parameter that must be one of `values`, or undefined when absent or empty. */
export function enumParam<T extends string>(
  q: URLSearchParams,
  name: string,
  values: readonly T[],
): T | undefined {
  const raw = q.get(name);
  if (raw === null || raw === '') return undefined;
  if (!(values as readonly string[]).includes(raw)) {
    throw new ApiError(400, `${name} must be one of ${values.join(', ')}; got ${JSON.stringify(raw)}.`, {
      code: `invalid_${name}`,
      param: name,
    });
  }
  return raw as T;
}

/** An optional integer query parameter within bounds (undefined when absent). */
export function optionalIntParam(
  q: URLSearchParams,
  name: string,
  bounds: { min: number; max: number },
): number | undefined {
  const raw = q.get(name);
  return raw === null || raw === '' ? undefined : intParam(q, name, { ...bounds, fallback: bounds.min });
}
