// @ts-check
import { api, downloadFile } from '../api.js';
import { barChart, chartWidth, legend, progressBar } from '../charts.js';
import {
  fmtDuration,
  fmtNum,
  fmtPercent,
  fmtTime,
  h,
  LIVE_STATUSES,
  nowSeconds,
  replaceChildren,
  statusBadge,
} from '../dom.js';
import { requestsSection } from './batch-requests.js';
import { cancelBatch } from './batches.js';
import { endedHint, runRate } from './progress.js';
import { retryFailed } from './retry-dialog.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').BatchProgress} BatchProgress */
/** @typedef {import('../../../src/server/dashboard-wire.js').FailureSummary} FailureSummary */

/**
 * A cost in the price table's currency: "12.40", "0.0312" (three significant digits below 1).
 * @param {number} cost
 */
const fmtCost = (cost) => (cost >= 1 || cost === 0 ? cost.toFixed(2) : cost.toPrecision(3));

/**
 * One batch: counts, timeline, throughput, its requests, actions and downloads. The requests
 * table's filters, sort and page are in the URL (`#/batches/ID?state=failed&q=…&line=…`).
 * @type {import('../app-types.d.ts').Mount}
 */
export function mount(main, app, [batchId = ''], query) {
  document.title = `${batchId} · fusillade`;
  const enc = encodeURIComponent(batchId);
  /** @type {BatchProgress | null} */
  let progress = null;
  /** The failed and retried counts the failure summary was read at. */
  let failuresAt = '';

  const title = h('div.title-row');
  const actionsEl = h('div.btn-row.page-actions');
  const notices = h('div.notices', { role: 'status' });
  const stats = h('div.stats');
  const bar = h('div.progress-wrap');
  const timeline = h('ol.timeline');
  const chart = h('div.chart-box');
  const requests = requestsSection(batchId, app, query);

  main.append(
    h(
      'div.page',
      {},
      h(
        'nav.breadcrumb',
        { 'aria-label': 'Breadcrumb' },
        h('a.crumb', { href: '#/batches' }, 'Batches'),
        h('span', { 'aria-hidden': 'true' }, ' / '),
        h('span.crumb-id', { 'aria-current': 'page' }, batchId),
      ),
      h('div.page-head', {}, title, actionsEl),
      notices,
      stats,
      bar,
      h(
        'div.grid-2',
        {},
        h(
          'section.card',
          { 'aria-labelledby': 'timeline-title' },
          h('h2', { id: 'timeline-title' }, 'Timeline'),
          timeline,
        ),
        h(
          'section.card',
          { 'aria-labelledby': 'throughput-title' },
          h(
            'div.card-head',
            {},
            h('h2', { id: 'throughput-title' }, 'Throughput'),
            legend([
              ['seg-completed', 'completed'],
              ['seg-failed', 'failed (kept after a retry)'],
            ]),
          ),
          chart,
        ),
      ),
      requests.element,
    ),
  );
  title.append(h('h1', {}, batchId), h('span.muted', {}, 'Loading…'));

  async function loadBatch() {
    const p = /** @type {BatchProgress} */ (await api(`/api/dashboard/batches/${enc}/progress`));
    progress = p;
    render(p);
    requests.setProgress(p);
    const at = `${p.counts.failed}/${p.retried}`;
    if (at !== failuresAt) {
      requests.setFailures(
        p.counts.failed > 0
          ? /** @type {FailureSummary} */ (await api(`/api/dashboard/batches/${enc}/failures`))
          : null,
      );
      failuresAt = at;
    }
  }

  /** @param {BatchProgress} p */
  function render(p) {
    const c = p.counts;
    const live = LIVE_STATUSES.has(p.status);
    replaceChildren(
      title,
      h('h1', {}, p.id),
      statusBadge(p.status),
      h('span.endpoint', {}, p.endpoint),
      Object.entries(p.metadata ?? {}).map(([k, v]) => h('span.chip', {}, `${k}: ${v}`)),
    );
    renderActions(p, live);
    // Requests waiting for an upstream no running daemon serves: the batch cannot progress by itself.
    const messages = (p.errors?.data ?? []).map((e) => e.message);
    if (messages.join('\n') !== (notices.dataset.shown ?? '')) {
      notices.dataset.shown = messages.join('\n');
      replaceChildren(
        notices,
        messages.map((m) => h('p.notice', {}, m)),
      );
    }
    const finished = c.completed + c.failed;
    const eta =
      live && p.recent_rate && p.recent_rate > 0 ? (c.pending + c.in_progress) / p.recent_rate : null;
    const ended = p.status === 'expired' ? 'expired' : 'canceled';
    /**
     * @param {string} label
     * @param {string} value
     * @param {string} [cls]
     * @param {string} [hint]
     */
    const stat = (label, value, cls = '', hint = '') =>
      h(
        `div.stat${cls}`,
        {},
        h('div.stat-label', {}, label),
        h('div.stat-value', {}, value),
        hint ? h('div.stat-hint', {}, hint) : null,
      );
    replaceChildren(
      stats,
      stat(
        'Total',
        fmtNum(c.total),
        '',
        c.canceled > 0
          ? `${fmtNum(finished)} done · ${fmtNum(c.canceled)} ${ended}`
          : `${fmtPercent(finished, c.total)} done`,
      ),
      stat(
        'Completed',
        fmtNum(c.completed),
        '.ok',
        p.usage?.total_tokens ? `${fmtNum(p.usage.total_tokens)} tokens` : '',
      ),
      stat('Failed', fmtNum(c.failed), '.bad', p.retried ? `${fmtNum(p.retried)} retried so far` : ''),
      stat('Canceled', fmtNum(c.canceled), '.muted-stat', c.canceled ? 'never ran to an answer' : ''),
      stat('In progress', fmtNum(c.in_progress), '.info'),
      stat('Pending', fmtNum(c.pending)),
      p.cost === null || p.cost === undefined
        ? null
        : stat(
            'Cost',
            fmtCost(p.cost),
            '',
            p.model_usage.length > 1
              ? p.model_usage.map((m) => `${m.model} ${m.cost === null ? '—' : fmtCost(m.cost)}`).join(' · ')
              : 'at the configured prices',
          ),
      stat(live ? 'Rate (1 min)' : 'Average rate', runRate(p)),
      stat('ETA', live ? (eta === null ? '—' : fmtDuration(eta)) : 'ended', '', live ? '' : endedHint(p)),
    );
    replaceChildren(bar, progressBar(c, { large: true }));
    renderTimeline(p);
    const t = p.throughput;
    replaceChildren(
      chart,
      barChart({
        width: chartWidth(chart),
        height: 210,
        start: t.start,
        bucketSeconds: t.bucket_seconds,
        series: [
          { label: 'completed', cls: 'seg-completed', values: t.completed },
          { label: 'failed', cls: 'seg-failed', values: t.failed },
        ],
        label: `Requests finished per ${fmtDuration(t.bucket_seconds)}`,
      }),
      h('p.chart-note', {}, `Requests finished per ${fmtDuration(t.bucket_seconds)}`),
    );
  }

  /** @param {BatchProgress} p */
  function renderTimeline(p) {
    /** @type {[string, number | null | undefined, boolean?][]} */
    const steps = [
      ['Created', p.created_at],
      ['In progress', p.in_progress_at],
      ['Cancelling', p.cancelling_at],
      ['Finalizing', p.finalizing_at],
      ['Completed', p.completed_at],
      ['Failed', p.failed_at],
      ['Expired', p.expired_at],
      ['Cancelled', p.cancelled_at],
    ];
    const shown = steps.filter(([, t]) => t);
    const ended = p.completed_at || p.failed_at || p.expired_at || p.cancelled_at;
    if (!ended && p.expires_at) shown.push(['Deadline', p.expires_at, true]);
    replaceChildren(
      timeline,
      shown.map(([label, t = 0, future]) =>
        h(
          `li${future ? '.future' : ''}`,
          {},
          h('span.tl-label', {}, label),
          h('time', { datetime: new Date((t ?? 0) * 1000).toISOString() }, fmtTime(t)),
          future ? h('span.tl-rel', {}, `in ${fmtDuration((t ?? 0) - nowSeconds())}`) : null,
        ),
      ),
    );
  }

  /**
   * @param {BatchProgress} p
   * @param {boolean} live
   */
  function renderActions(p, live) {
    const c = p.counts;
    const buttons = [];
    // Finalizing: the deadline has passed (nothing more is sent); a cancelled or expired batch stays
    // ended. A completed one can be reopened, which the retry dialog asks to confirm.
    const canRetry = c.failed > 0 && !['cancelling', 'cancelled', 'expired', 'finalizing'].includes(p.status);
    buttons.push(
      h(
        'button.btn',
        {
          type: 'button',
          disabled: !canRetry,
          dataset: { key: 'retry' },
          'aria-haspopup': 'dialog',
          onclick: async () => {
            try {
              const r = await retryFailed(app, batchId, p.status);
              if (!r) return;
              app.toast(
                `${fmtNum(r.retried)} failed request${r.retried === 1 ? '' : 's'} queued again${r.reopened ? '; the batch is open again' : ''}`,
              );
              await refresh();
            } catch (err) {
              app.toast(err instanceof Error ? err.message : String(err), 'error');
            }
          },
        },
        `Retry failed${c.failed ? ` (${fmtNum(c.failed)})` : ''}`,
      ),
    );
    if (live && p.status !== 'cancelling' && p.status !== 'finalizing') {
      buttons.push(
        h(
          'button.btn.danger',
          {
            type: 'button',
            dataset: { key: 'cancel' },
            'aria-haspopup': 'dialog',
            onclick: (/** @type {MouseEvent} */ e) =>
              cancelBatch(app, batchId, /** @type {HTMLButtonElement} */ (e.currentTarget), refresh),
          },
          'Cancel batch',
        ),
      );
    }
    /** @type {[string | null, string, string][]} */
    const files = [
      [p.input_file_id, 'Input', 'input'],
      [p.output_file_id ?? null, 'Output', 'output'],
      [p.error_file_id ?? null, 'Errors', 'errors'],
    ];
    const downloads = files.map(([fileId, label, suffix]) =>
      h(
        'button.btn',
        {
          type: 'button',
          disabled: !fileId,
          title: fileId ? `Download ${fileId}` : `No ${label.toLowerCase()} file yet`,
          dataset: { key: `download-${suffix}` },
          onclick: () =>
            fileId &&
            downloadFile(fileId, `${p.id}_${suffix}.jsonl`).catch((err) => app.toast(err.message, 'error')),
        },
        `↓ ${label}`,
      ),
    );
    replaceChildren(
      actionsEl,
      buttons,
      h('span.divider', { 'aria-hidden': 'true' }),
      h('div.btn-group', { role: 'group', 'aria-label': 'Downloads' }, downloads),
    );
  }

  async function refresh() {
    await Promise.all([loadBatch(), requests.load()]);
  }

  // Live batches refresh every 1.5 s; an ended one's counts every 2 s too (so an outage shows within
  // a few seconds), its requests table every fifth time. A custom_id search reads all of the
  // batch's templates, so its table refreshes less often.
  let ticks = 0;
  let stopped = false;
  app.poll(async () => {
    if (stopped) return;
    const tick = ticks++;
    const live = progress === null || LIVE_STATUSES.has(progress.status);
    const table = tick === 0 || (live ? !requests.searching || tick % 4 === 0 : tick % 5 === 0);
    try {
      await Promise.all([loadBatch(), table ? requests.load() : null]);
    } catch (err) {
      if (!(err instanceof Error && 'status' in err && err.status === 404)) throw err;
      // Not this owner's batch (or no such batch): say so instead of retrying forever.
      main.replaceChildren(
        h(
          'div.page',
          {},
          h('h1', {}, 'Batch not found'),
          h('p.muted', {}, `There is no batch ${batchId} for this API key.`),
          h('p', {}, h('a', { href: '#/batches' }, '← All batches')),
        ),
      );
      stopped = true;
    }
  }, 1500);

  return {
    update(q) {
      requests.update(q).catch((err) => app.toast(err.message, 'error'));
    },
  };
}
