import { describe, expect, it } from 'vitest';
import { formatDuration, nextReadDelayMs, ProgressDisplay } from '../../src/cli/progress.js';

/** A stand-in terminal or pipe that records what is written. */
function sink(tty: boolean, columns = 100) {
  const written: string[] = [];
  const out = {
    isTTY: tty,
    columns,
    write: (s: string) => written.push(s) > 0,
  } as unknown as NodeJS.WriteStream;
  return { out, written };
}

describe('progress display', () => {
  it('draws a bar with done/total, failed, rate and ETA in place on a terminal', () => {
    const { out, written } = sink(true);
    const p = new ProgressDisplay(out);
    p.update({ total: 20_000, completed: 0, failed: 0, canceled: 0 }, 0);
    p.update({ total: 20_000, completed: 9_990, failed: 10, canceled: 0 }, 2000);
    const last = written[written.length - 1]!;
    expect(last.startsWith('\r\x1b[2K▕')).toBe(true);
    expect(last).toContain('10,000/20,000  50.0%  10 failed  5,000 req/s  ETA 2s');
    expect(last.length).toBeLessThanOrEqual(100 + 5);
    p.finish({ total: 20_000, completed: 19_990, failed: 10, canceled: 0 }, 4000);
    expect(written[written.length - 1]).toMatch(
      /20,000\/20,000 {2}100\.0% {2}10 failed {2}5,000 req\/s {2}ETA 0s\n$/,
    );
  });

  it('prints plain lines at most every interval when not a terminal', () => {
    const { out, written } = sink(false);
    const p = new ProgressDisplay(out, { lineIntervalMs: 1000 });
    p.update({ total: 10, completed: 1, failed: 0, canceled: 0 }, 1000);
    p.update({ total: 10, completed: 2, failed: 0, canceled: 0 }, 1500); // within the interval: silent
    p.update({ total: 10, completed: 5, failed: 1, canceled: 2 }, 2000);
    expect(written).toEqual([
      'progress: 1/10  10.0%  0 failed  0 req/s  ETA --\n',
      'progress: 8/10  80.0%  1 failed  2 canceled  7 req/s  ETA 0s\n',
    ]);
  });

  it('formats durations', () => {
    expect(formatDuration(5.4)).toBe('5s');
    expect(formatDuration(125)).toBe('2m05s');
    expect(formatDuration(7260)).toBe('2h01m');
  });

  it('counts at most every 5 s, stretched so that counts take a tenth of the time', () => {
    expect(nextReadDelayMs(200, 3)).toBe(5000);
    expect(nextReadDelayMs(2000, 50)).toBe(5000);
    expect(nextReadDelayMs(200, 700)).toBe(7000);
    expect(nextReadDelayMs(10_000, 40)).toBe(10_000);
  });
});
