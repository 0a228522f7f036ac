// @ts-check
// How a batch's progress reads, in the list and on its page: honest about canceled and expired
// requests (they are not "done"), with one rate format.
import { fmtDuration, fmtNum, fmtPercent, fmtRate, h, LIVE_STATUSES, nowSeconds } from '../dom.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').DashboardBatch} DashboardBatch */

/**
 * "120 / 800 · 15%" while it runs; "12 done · 788 canceled" once requests were canceled (or
 * "788 expired" for a batch whose window ran out): canceled requests never ran.
 * @param {DashboardBatch} b
 */
export function progressText(b) {
  const c = b.counts;
  const finished = c.completed + c.failed;
  const failed = c.failed > 0 ? h('span.fail-count', {}, `${fmtNum(c.failed)} failed`) : null;
  if (c.canceled > 0) {
    const word = b.status === 'expired' ? 'expired' : 'canceled';
    return h(
      'div.sub.counts',
      {},
      h('span', {}, `${fmtNum(finished)} done`),
      h('span.cancel-count', {}, `· ${fmtNum(c.canceled)} ${word}`),
      failed,
    );
  }
  return h(
    'div.sub.counts',
    {},
    h('span', {}, `${fmtNum(finished)} / ${fmtNum(c.total)}`),
    h('span.muted', {}, fmtPercent(finished, c.total)),
    failed,
  );
}

/**
 * Seconds it has run: from its start to its end (or now while live).
 * @param {DashboardBatch} b
 */
export function runSeconds(b) {
  return (b.finished_at ?? nowSeconds()) - (b.in_progress_at ?? b.created_at);
}

/**
 * Requests finished per second: over the last minute while live, the average over its run once
 * ended.
 * @param {DashboardBatch} b
 */
export function runRate(b) {
  if (LIVE_STATUSES.has(b.status)) return fmtRate(b.recent_rate);
  const elapsed = runSeconds(b);
  const finished = b.counts.completed + b.counts.failed;
  return elapsed > 0 && finished > 0 ? fmtRate(finished / elapsed) : '—';
}

/**
 * The ETA stat's hint once ended: how long it ran, and how it ended.
 * @param {DashboardBatch} b
 */
export function endedHint(b) {
  const took = fmtDuration(runSeconds(b));
  if (b.status === 'cancelled') return `cancelled after ${took}`;
  if (b.status === 'expired') return `expired after ${took}`;
  return `took ${took}`;
}
