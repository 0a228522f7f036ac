import { describe, expect, it } from 'vitest';
import {
  BATCH_STATUSES,
  BATCH_TRANSITIONS,
  type BatchTimestamps,
  batchLifecycleStatus,
  ENDED_BATCH_STATUSES,
  LIVE_BATCH_STATUSES,
} from '../../src/domain/batch-lifecycle.js';

const NOW = new Date('2026-01-01T12:00:00Z');
const AHEAD = new Date(NOW.getTime() + 3_600_000);
const PAST = new Date(NOW.getTime() - 1);

type Row = BatchTimestamps & { finishedAt: Date | null };

const created = (): Row => ({
  finalizingAt: null,
  completedAt: null,
  expiredAt: null,
  cancellingAt: null,
  cancelledAt: null,
  finishedAt: null,
  expiresAt: AHEAD,
});

/** Walks the transition table from creation: each step's `from` must be the status read before it. */
function walk(path: string[]): Row {
  let row = created();
  let now = NOW;
  expect(batchLifecycleStatus(row, now)).toBe('in_progress');
  for (const step of path) {
    const [from, to] = step.split('->') as [string, string];
    const t = BATCH_TRANSITIONS.find((x) => x.from === from && x.to === to);
    expect(t, step).toBeDefined();
    expect(batchLifecycleStatus(row, now), `before ${step}`).toBe(from);
    row = { ...row };
    if (t!.deadlinePasses) now = new Date(AHEAD.getTime() + 1);
    for (const f of t!.sets) row[f] = now;
    for (const f of t!.clears) row[f] = null;
    expect(batchLifecycleStatus(row, now), `after ${step}`).toBe(to);
  }
  return row;
}

describe('the batch lifecycle', () => {
  it('every transition of the table leads from its status to its status', () => {
    walk(['in_progress->completed', 'completed->in_progress', 'in_progress->completed']);
    walk(['in_progress->cancelling', 'cancelling->cancelled']);
    walk(['in_progress->finalizing', 'finalizing->expired']);
    walk([
      'in_progress->completed',
      'completed->in_progress',
      'in_progress->cancelling',
      'cancelling->cancelled',
    ]);
    const used = new Set<string>();
    for (const t of BATCH_TRANSITIONS) used.add(`${t.from}->${t.to}`);
    expect(used.size).toBe(BATCH_TRANSITIONS.length);
  });

  it('ended statuses are those with finished_at; live and ended partition the statuses', () => {
    expect([...LIVE_BATCH_STATUSES, ...ENDED_BATCH_STATUSES].sort()).toEqual([...BATCH_STATUSES].sort());
    for (const t of BATCH_TRANSITIONS) {
      if (t.sets.includes('finishedAt')) expect(ENDED_BATCH_STATUSES).toContain(t.to);
      if (t.clears.includes('finishedAt')) expect(LIVE_BATCH_STATUSES).toContain(t.to);
    }
  });

  it('past its deadline a live batch reads finalizing; without a deadline never; cancelling wins', () => {
    expect(batchLifecycleStatus({ ...created(), expiresAt: PAST }, NOW)).toBe('finalizing');
    expect(batchLifecycleStatus({ ...created(), expiresAt: NOW }, NOW)).toBe('finalizing');
    expect(batchLifecycleStatus({ ...created(), expiresAt: null }, new Date(8.64e15))).toBe('in_progress');
    expect(batchLifecycleStatus({ ...created(), expiresAt: PAST, cancellingAt: PAST }, NOW)).toBe(
      'cancelling',
    );
  });
});
