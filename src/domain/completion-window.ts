/** Parses an OpenAI-style completion window ("24h", "30m", "7d", "90s") into milliseconds. */
export function parseCompletionWindow(window: string): number | undefined {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(window.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const ms = n * unit;
  return ms > 0 ? ms : undefined;
}
