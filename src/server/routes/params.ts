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
