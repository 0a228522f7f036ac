import { api, downloadFile } from '../api.js';
import { barChart, chartWidth, legend, progressBar } from '../charts.js';
import {
  debounce,
  fmtDuration,
  fmtMs,
  fmtNum,
  fmtPercent,
  fmtRate,
  fmtTime,
  h,
  LIVE_STATUSES,
  replaceChildren,
  statusBadge,
} from '../dom.js';
import { openRequestViewer } from './request-viewer.js';

const STATES = ['pending', 'claimed', 'processing', 'completed', 'failed', 'canceled'];
const PAGE_SIZE = 25;

/** One batch: counts, timeline, throughput, its requests, actions and downloads. */
export function mount(main, app, batchId) {
  document.title = `${batchId} · fusillade`;
  const enc = encodeURIComponent(batchId);
  const filters = { state: '', q: '', cursors: [0] };
  let batch = null;
  let progress = null;
  let live = true;

  const title = h('div.title-row');
  const actionsEl = h('div.btn-row.page-actions');
  const stats = h('div.stats');
  const bar = h('div.progress-wrap');
  const timeline = h('ol.timeline');
  const chart = h('div.chart-box');
  const tbody = h('tbody');
  const reqSummary = h('span.muted', { 'aria-live': 'polite' });
  const prev = h('button.btn.small', { type: 'button', onclick: () => pageRequests(-1) }, '← Previous');
  const next = h('button.btn.small', { type: 'button', onclick: () => pageRequests(1) }, 'Next →');
  let requestsPage = { data: [], has_more: false };

  const stateSelect = h(
    'select',
    {
      id: 'state-filter',
      onchange: (e) => {
        filters.state = e.target.value;
        restartRequests();
      },
    },
    h('option', { value: '' }, 'All states'),
    STATES.map((s) => h('option', { value: s }, s)),
  );
  const search = h('input', {
    id: 'custom-id-search',
    type: 'search',
    placeholder: 'custom_id contains…',
    autocomplete: 'off',
    oninput: debounce((e) => {
      filters.q = e.target.value.trim();
      restartRequests();
    }, 250),
  });

  main.append(
    h(
      'div.page',
      {},
      h(
        'nav.breadcrumb',
        { 'aria-label': 'Breadcrumb' },
        h('a.crumb', { href: '#/batches' }, 'Batches'),
        h('span', { 'aria-hidden': 'true' }, ' / '),
        h('span', { 'aria-current': 'page' }, batchId),
      ),
      h('div.page-head', {}, title, actionsEl),
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
              ['seg-failed', 'failed'],
            ]),
          ),
          chart,
        ),
      ),
      h(
        'section.card.table-card',
        { 'aria-labelledby': 'requests-title' },
        h('div.card-head', {}, h('h2', { id: 'requests-title' }, 'Requests'), reqSummary),
        h(
          'div.toolbar.inset',
          { role: 'search', 'aria-label': 'Filter requests' },
          h('div.field', {}, h('label', { for: 'state-filter' }, 'State'), stateSelect),
          h('div.field.grow', {}, h('label', { for: 'custom-id-search' }, 'Search custom_id'), search),
        ),
        h(
          'table.table.requests',
          {},
          h('caption.visually-hidden', {}, 'Requests of this batch in input order'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th.num', { scope: 'col' }, 'Line'),
              h('th', { scope: 'col' }, 'custom_id'),
              h('th', { scope: 'col' }, 'Model'),
              h('th', { scope: 'col' }, 'State'),
              h('th.num', { scope: 'col' }, 'Attempts'),
              h('th.num', { scope: 'col' }, 'Status'),
              h('th.num', { scope: 'col' }, 'Latency'),
            ),
          ),
          tbody,
        ),
        h('div.pager', {}, prev, next),
      ),
    ),
  );

  async function loadBatch() {
    const [b, p] = await Promise.all([
      api(`/v1/batches/${enc}`),
      api(`/api/dashboard/batches/${enc}/progress`),
    ]);
    batch = b;
    progress = p;
    live = LIVE_STATUSES.has(p.status);
    renderBatch();
  }

  function renderBatch() {
    const c = progress.counts;
    replaceChildren(
      title,
      h('h1', {}, batch.id),
      statusBadge(progress.status),
      h('span.endpoint', {}, batch.endpoint),
      Object.entries(batch.metadata ?? {}).map(([k, v]) => h('span.chip', {}, `${k}: ${v}`)),
    );
    renderActions(c);
    const done = c.completed + c.failed + c.canceled;
    const elapsed =
      (progress.finished_at ?? Date.now() / 1000) - (progress.in_progress_at ?? progress.created_at);
    const rate = live ? progress.recent_rate : elapsed > 0 ? (c.completed + c.failed) / elapsed : null;
    const eta = live && progress.recent_rate > 0 ? (c.pending + c.in_progress) / progress.recent_rate : null;
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
      stat('Total', fmtNum(c.total), '', `${fmtPercent(done, c.total)} done`),
      stat(
        'Completed',
        fmtNum(c.completed),
        '.ok',
        progress.usage?.total_tokens ? `${fmtNum(progress.usage.total_tokens)} tokens` : '',
      ),
      stat('Failed', fmtNum(c.failed), '.bad'),
      stat('Canceled', fmtNum(c.canceled), '.muted-stat'),
      stat('In progress', fmtNum(c.in_progress), '.info'),
      stat('Pending', fmtNum(c.pending)),
      stat(live ? 'Rate (1 min)' : 'Average rate', fmtRate(rate)),
      stat(
        'ETA',
        live ? (eta === null ? '—' : fmtDuration(eta)) : 'done',
        '',
        live ? '' : `took ${fmtDuration(elapsed)}`,
      ),
    );
    replaceChildren(bar, progressBar(c, { large: true }));
    renderTimeline();
    const t = progress.throughput;
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

  function renderTimeline() {
    const p = progress;
    const steps = [
      ['Created', p.created_at],
      ['In progress', p.in_progress_at],
      ['Cancelling', p.cancelling_at],
      ['Finalizing', p.finalizing_at],
      ['Completed', p.completed_at],
      ['Failed', p.failed_at],
      ['Expired', p.expired_at],
      ['Cancelled', p.cancelled_at],
    ].filter(([, t]) => t);
    const ended = p.completed_at || p.failed_at || p.expired_at || p.cancelled_at;
    if (!ended && p.expires_at) steps.push(['Deadline', p.expires_at, true]);
    replaceChildren(
      timeline,
      steps.map(([label, t, future]) =>
        h(
          `li${future ? '.future' : ''}`,
          {},
          h('span.tl-label', {}, label),
          h('time', { datetime: new Date(t * 1000).toISOString() }, fmtTime(t)),
          future ? h('span.tl-rel', {}, `in ${fmtDuration(t - Date.now() / 1000)}`) : null,
        ),
      ),
    );
  }

  function renderActions(c) {
    const buttons = [];
    // Finalizing: the deadline has passed (nothing more is sent), so neither retry nor cancel.
    const canRetry =
      c.failed > 0 && !['cancelling', 'cancelled', 'expired', 'finalizing'].includes(progress.status);
    buttons.push(
      h(
        'button.btn',
        {
          type: 'button',
          disabled: !canRetry,
          dataset: { key: 'retry' },
          onclick: async (e) => {
            e.target.disabled = true;
            try {
              const r = await api(`/api/dashboard/batches/${enc}/retry`, {
                method: 'POST',
                body: { reopen: true },
              });
              app.toast(`${fmtNum(r.retried)} failed request${r.retried === 1 ? '' : 's'} queued again`);
              await refresh();
            } catch (err) {
              app.toast(err.message, 'error');
            }
          },
        },
        `Retry failed${c.failed ? ` (${fmtNum(c.failed)})` : ''}`,
      ),
    );
    if (live && progress.status !== 'cancelling' && progress.status !== 'finalizing') {
      buttons.push(
        h(
          'button.btn.danger',
          {
            type: 'button',
            dataset: { key: 'cancel' },
            onclick: async (e) => {
              if (
                !confirm('Cancel this batch? Unfinished requests will be canceled; results so far are kept.')
              )
                return;
              e.target.disabled = true;
              try {
                await api(`/v1/batches/${enc}/cancel`, { method: 'POST' });
                app.toast('Cancelling the batch');
                await refresh();
              } catch (err) {
                app.toast(err.message, 'error');
              }
            },
          },
          'Cancel batch',
        ),
      );
    }
    const files = [
      [batch.input_file_id, 'Input', 'input'],
      [batch.output_file_id, 'Output', 'output'],
      [batch.error_file_id, 'Errors', 'errors'],
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
            downloadFile(fileId, `${batch.id}_${suffix}.jsonl`).catch((err) =>
              app.toast(err.message, 'error'),
            ),
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

  async function loadRequests() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (filters.state) params.set('state', filters.state);
    if (filters.q) params.set('q', filters.q);
    if (filters.cursors.at(-1)) params.set('after_line', String(filters.cursors.at(-1)));
    const key = params.toString();
    loadRequests.latest = key;
    const result = await api(`/api/dashboard/batches/${enc}/requests?${key}`);
    if (loadRequests.latest !== key) return;
    requestsPage = result;
    renderRequests();
  }

  function renderRequests() {
    const rows = requestsPage.data;
    prev.disabled = filters.cursors.length <= 1;
    next.disabled = !requestsPage.has_more;
    const first = rows[0]?.line;
    const last = rows.at(-1)?.line;
    reqSummary.textContent = rows.length
      ? `lines ${first}–${last}${requestsPage.has_more ? ' (more)' : ''}`
      : '';
    if (rows.length === 0) {
      replaceChildren(
        tbody,
        h(
          'tr',
          {},
          h(
            'td.empty',
            { colspan: 7 },
            filters.state || filters.q ? 'No request matches these filters.' : 'No requests.',
          ),
        ),
      );
      return;
    }
    replaceChildren(
      tbody,
      rows.map((r) =>
        h(
          'tr',
          { dataset: { id: r.id } },
          h('td.num.muted', {}, r.line),
          h(
            'td',
            {},
            h(
              'button.link',
              {
                type: 'button',
                dataset: { key: `req-${r.id}` },
                'aria-label': `Open request ${r.custom_id ?? r.line}`,
                onclick: () => openRequestViewer(batchId, r.id, app),
              },
              r.custom_id ?? `line ${r.line}`,
            ),
          ),
          h('td.mono', {}, r.model),
          h('td', {}, h(`span.state.state-${r.state}`, {}, r.state)),
          h('td.num', {}, r.attempts),
          h(
            'td.num',
            {},
            r.status_code
              ? h(`span.code.code-${String(r.status_code)[0]}xx`, {}, r.status_code)
              : r.error_code
                ? h('span.code.code-x', { title: r.error_code }, r.error_code)
                : '—',
          ),
          h('td.num', {}, fmtMs(r.latency_ms)),
        ),
      ),
    );
  }

  function restartRequests() {
    filters.cursors = [0];
    loadRequests().catch((err) => app.toast(err.message, 'error'));
  }

  function pageRequests(delta) {
    if (delta > 0 && requestsPage.data.length) filters.cursors.push(requestsPage.data.at(-1).line);
    if (delta < 0 && filters.cursors.length > 1) filters.cursors.pop();
    loadRequests().catch((err) => app.toast(err.message, 'error'));
  }

  async function refresh() {
    await Promise.all([loadBatch(), loadRequests()]);
  }

  // Live batches refresh every 1.5 s; ended ones rarely change (a retry reopens them). A custom_id
  // search reads all of the batch's templates, so its table refreshes less often.
  let ticks = 0;
  let stopped = false;
  app.poll(async () => {
    if (stopped) return;
    const tick = ticks++;
    if (batch !== null && !live && tick % 7 !== 0) return;
    try {
      await Promise.all([loadBatch(), filters.q && tick % 4 !== 0 ? null : loadRequests()]);
    } catch (err) {
      if (err.status !== 404) throw err;
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
}
