/**
 * The longest completion window the library takes (365 days): further deadlines are mistakes (a
 * typo's "100000000h" once made a batch that expired in the year 13434); a batch without one takes
 * `completionWindow: null`. The API server allows less (its `maxCompletionWindow`, 30 days).
 */
export const LONGEST_COMPLETION_WINDOW_MS = 365 * 86_400_000;

/** Parses an OpenAI-style completion window ("24h", "30m", "7d", "90s") into milliseconds. */
export function parseCompletionWindow(window: string): number | undefined {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(window.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const ms = n * unit;
  return ms > 0 ? ms : undefined;
}
