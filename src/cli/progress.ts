/** Counts a progress display shows; `done` = completed + failed + canceled. */
export interface ProgressCounts {
  total: number;
  completed: number;
  failed: number;
  canceled: number;
  /** Epoch ms until which a model of the batch is paused by its rate limit (after a 429), if any. */
  rateLimitedUntil?: number | null;
}

interface Sample {
  at: number;
  done: number;
}

const RATE_WINDOW_MS = 5000;
/** How often a terminal's bar is redrawn. */
const BAR_REFRESH_MS = 200;
/** The share of wall time the counts' reads may take: a read of R ms waits R × this before the next. */
const READ_DUTY_FACTOR = 10;
/** Counts of a live batch are at least this far apart (the daemon's own ends fill in between). */
const MIN_READ_INTERVAL_MS = 5000;

/**
 * How long to wait before counting a live batch's rows again, given how long the last count took:
 * at least 5 s (and the display's own interval), stretched so that the counts take at most a tenth of
 * the time (a count reads each of the batch's rows, so a 1M-line batch's takes hundreds of ms).
 * Between counts, `fusillade run` shows what its in-process daemon ended (src/cli/run/watch.ts).
 */
export function nextReadDelayMs(refreshMs: number, lastReadMs: number): number {
  return Math.max(refreshMs, lastReadMs * READ_DUTY_FACTOR, MIN_READ_INTERVAL_MS);
}

/**
 * A live progress bar on a terminal (redrawn in place), or plain periodic lines when output is
 * piped or logged:
 *   ▕██████████████▋         ▏ 12,345/20,000  61.7%  3 failed  4,210 req/s  ETA 2s
 */
export class ProgressDisplay {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly lineIntervalMs: number;
  private readonly samples: Sample[] = [];
  private lastLineAt = 0;
  private drawn = false;
  private first: Sample | undefined;

  constructor(out: NodeJS.WriteStream = process.stdout, options: { lineIntervalMs?: number } = {}) {
    this.out = out;
    this.tty = out.isTTY === true && process.env.TERM !== 'dumb';
    this.lineIntervalMs = options.lineIntervalMs ?? 2000;
  }

  /**
   * How often fresh counts are worth reading: the bar's redraw on a terminal, else the interval of
   * the plain lines (reading them more often would show nothing more).
   */
  get refreshMs(): number {
    return this.tty ? BAR_REFRESH_MS : this.lineIntervalMs;
  }

  update(counts: ProgressCounts, now = Date.now()): void {
    this.record(counts, now);
    if (this.tty) {
      this.out.write(`\r\x1b[2K${this.render(counts, now, this.out.columns || 80)}`);
      this.drawn = true;
    } else if (now - this.lastLineAt >= this.lineIntervalMs) {
      this.lastLineAt = now;
      this.out.write(`progress: ${this.render(counts, now, 0)}\n`);
    }
  }

  /** Draws the final state, with the average rate since the first update, and moves to a new line. */
  finish(counts: ProgressCounts, now = Date.now()): void {
    this.record(counts, now);
    if (this.first && now > this.first.at) {
      this.samples.splice(0, this.samples.length, this.first, { at: now, done: doneOf(counts) });
    }
    if (this.tty) this.out.write(`\r\x1b[2K${this.render(counts, now, this.out.columns || 80)}\n`);
    else this.out.write(`progress: ${this.render(counts, now, 0)}\n`);
    this.drawn = false;
  }

  /** Ends the bar's line so that a message can follow (e.g. on Ctrl-C). */
  interrupt(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }

  /** Requests per second over the last few seconds. */
  rate(): number {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.at <= first.at) return 0;
    return ((last.done - first.done) * 1000) / (last.at - first.at);
  }

  private record(counts: ProgressCounts, now: number): void {
    this.samples.push({ at: now, done: doneOf(counts) });
    this.first ??= this.samples[0];
    while (this.samples.length > 2 && now - this.samples[0]!.at > RATE_WINDOW_MS) this.samples.shift();
  }

  /** The status text; with `width` > 0 a bar fills what the numbers leave of the line. */
  render(counts: ProgressCounts, now: number, width: number): string {
    const done = doneOf(counts);
    const fraction = counts.total > 0 ? done / counts.total : 1;
    const rate = this.rate();
    const remaining = counts.total - done;
    const eta = remaining === 0 ? '0s' : rate > 0 ? formatDuration(remaining / rate) : '--';
    const parts = [
      `${num(done)}/${num(counts.total)}`,
      `${(fraction * 100).toFixed(1)}%`,
      `${num(counts.failed)} failed`,
      ...(counts.canceled > 0 ? [`${num(counts.canceled)} canceled`] : []),
      `${num(Math.round(rate))} req/s`,
      `ETA ${eta}`,
      ...(counts.rateLimitedUntil != null && counts.rateLimitedUntil > now
        ? [`waiting for rate limit until ${clockTime(counts.rateLimitedUntil)}`]
        : []),
    ];
    const text = parts.join('  ');
    if (width <= 0) return text;
    const barWidth = Math.min(40, width - text.length - 4);
    return barWidth >= 10 ? `${bar(fraction, barWidth)} ${text}` : text.slice(0, width - 1);
  }
}

/** HH:MM:SS in the local time zone. */
function clockTime(ms: number): string {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

function doneOf(c: ProgressCounts): number {
  return c.completed + c.failed + c.canceled;
}

const PARTIAL = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

function bar(fraction: number, width: number): string {
  const eighths = Math.round(Math.max(0, Math.min(1, fraction)) * width * 8);
  const full = Math.floor(eighths / 8);
  const part = PARTIAL[eighths % 8] ?? '';
  return `▕${'█'.repeat(full)}${part}${' '.repeat(width - full - (part ? 1 : 0))}▏`;
}

function num(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
