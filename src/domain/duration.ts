/** A duration such as "30d", "12h", "15m", "90s" or "0s", in milliseconds; undefined if it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const ms = Number(m[1]) * unit;
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** The pattern of parseDuration's text, for settings. */
export const DURATION_PATTERN = /^\s*\d{1,9}\s*(s|m|h|d)\s*$/;
