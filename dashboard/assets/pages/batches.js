// @ts-check
import { api, downloadFile } from '../api.js';
import { legend, progressBar } from '../charts.js';
import { openDialog } from '../dialog.js';
import {
  debounce,
  fmtAgo,
  fmtDuration,
  fmtNum,
  fmtTime,
  h,
  LIVE_STATUSES,
  replaceChildren,
  shortId,
  statusBadge,
} from '../dom.js';
import domain from '../domain.js';
import { progressText, runRate } from './progress.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').BatchList} BatchList */
/** @typedef {import('../../../src/server/dashboard-wire.js').DashboardBatch} DashboardBatch */

const PAGE_SIZE = 20;

/**
 * The batches list: newest first, paged, filtered by status and searched, refreshed live. Its state
 * is in the URL: `#/batches?status=…&q=…&after=ID` (older than ID) or `before=ID` (newer than ID).
 * @type {import('../app-types.d.ts').Mount}
 */
export function mount(main, app, _params, initialQuery) {
  document.title = 'Batches · fusillade';
  let query = initialQuery;
  const body = h('tbody');
  const summary = h('p.muted.count', { 'aria-live': 'polite' });
  const prev = /** @type {HTMLButtonElement} */ (
    h('button.btn.small', { type: 'button', disabled: true, onclick: () => page(-1) }, '← Newer')
  );
  const next = /** @type {HTMLButtonElement} */ (
    h('button.btn.small', { type: 'button', disabled: true, onclick: () => page(1) }, 'Older →')
  );
  /** @type {BatchList | null} */
  let lastPage = null;
  let scrollAfterLoad = false;

  const statusSelect = /** @type {HTMLSelectElement} */ (
    h(
      'select',
      { id: 'status-filter', onchange: () => setFilter('status', statusSelect.value) },
      h('option', { value: '' }, 'All statuses'),
      domain.BATCH_STATUSES.map((s) => h('option', { value: s }, s.replace('_', ' '))),
    )
  );
  const search = /** @type {HTMLInputElement} */ (
    h('input', {
      id: 'batch-search',
      type: 'search',
      placeholder: 'batch_… or metadata',
      autocomplete: 'off',
      oninput: debounce(() => setFilter('q', search.value.trim(), true), 300),
    })
  );

  main.append(
    h(
      'div.page',
      {},
      h('div.page-head', {}, h('h1', {}, 'Batches'), summary),
      h(
        'div.toolbar',
        { role: 'search', 'aria-label': 'Filter batches' },
        h('div.field', {}, h('label', { for: 'status-filter' }, 'Status'), statusSelect),
        h('div.field.grow', {}, h('label', { for: 'batch-search' }, 'Search by id or metadata'), search),
        h(
          'div.legend-end',
          {},
          legend([
            ['seg-completed', 'completed'],
            ['seg-failed', 'failed'],
            ['seg-canceled', 'canceled'],
            ['seg-in_progress', 'in progress'],
            ['seg-pending', 'pending'],
          ]),
        ),
      ),
      h(
        'div.card.table-card',
        {},
        h(
          'table.table.batches',
          {},
          h('caption.visually-hidden', {}, 'Your batches, newest first'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', { scope: 'col' }, 'Batch'),
              h('th', { scope: 'col' }, 'Status'),
              h('th.progress-col', { scope: 'col' }, 'Progress'),
              h(
                'th.num',
                { scope: 'col', title: 'Requests per second: last minute while live, average once ended' },
                'Rate',
              ),
              h('th.num', { scope: 'col' }, 'ETA'),
              h('th.num', { scope: 'col' }, 'Age'),
              h('th', { scope: 'col' }, h('span.visually-hidden', {}, 'Actions')),
            ),
          ),
          body,
        ),
        h('div.pager', {}, prev, next),
      ),
    ),
  );
  replaceChildren(body, h('tr', {}, h('td.empty', { colspan: 7 }, 'Loading batches…')));

  /** The API's query for the URL's state. */
  function apiParams() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const k of ['status', 'q', 'after', 'before']) {
      const v = query.get(k);
      if (v) params.set(k, v);
    }
    return params.toString();
  }

  function syncControls() {
    statusSelect.value = query.get('status') ?? '';
    if (document.activeElement !== search) search.value = query.get('q') ?? '';
  }

  async function load() {
    const requested = apiParams();
    try {
      const result = /** @type {BatchList} */ (await api(`/api/dashboard/batches?${requested}`));
      if (requested !== apiParams()) return; // the view changed while this was loading
      lastPage = result;
    } catch (err) {
      if (lastPage === null) {
        const message = err instanceof Error ? err.message : String(err);
        replaceChildren(
          body,
          h('tr', {}, h('td.empty.error', { colspan: 7 }, `Cannot load batches: ${message}`)),
        );
      }
      throw err;
    }
    render(lastPage);
    if (scrollAfterLoad) window.scrollTo({ top: 0 });
    scrollAfterLoad = false;
  }

  /** @param {BatchList} list */
  function render(list) {
    const rows = list.data;
    const running = rows.filter((b) => LIVE_STATUSES.has(b.status)).length;
    const total = `${fmtNum(list.total)}${list.total_exact ? '' : '+'}`;
    summary.textContent =
      rows.length === 0
        ? `${total} batches`
        : `${fmtNum(list.offset + 1)}–${fmtNum(list.offset + rows.length)} of ${total}${running ? ` · ${running} running on this page` : ''}`;
    prev.disabled = !list.has_newer;
    next.disabled = !list.has_more;
    if (rows.length === 0) {
      const filtered = query.get('status') || query.get('q');
      replaceChildren(
        body,
        h(
          'tr',
          {},
          h(
            'td.empty',
            { colspan: 7 },
            filtered
              ? 'No batch matches these filters.'
              : 'No batches yet. Create one with the Batch API or `fusillade run`.',
          ),
        ),
      );
      return;
    }
    replaceChildren(body, rows.map(row));
  }

  /** @param {DashboardBatch} b */
  function row(b) {
    const c = b.counts;
    const live = LIVE_STATUSES.has(b.status);
    const remaining = c.pending + c.in_progress;
    const eta = live && b.recent_rate && b.recent_rate > 0 ? remaining / b.recent_rate : null;
    const meta = Object.entries(b.metadata ?? {}).slice(0, 3);
    return h(
      'tr',
      { dataset: { id: b.id } },
      h(
        'td.batch-cell',
        {},
        h(
          'a.batch-link',
          { href: `#/batches/${b.id}`, title: b.id, dataset: { key: `open-${b.id}` } },
          shortId(b.id),
        ),
        h(
          'div.sub',
          {},
          h('span.endpoint', {}, b.endpoint || '—'),
          meta.map(([k, v]) => h('span.chip', { title: `${k}: ${v}` }, `${k}: ${v}`)),
        ),
      ),
      h('td.status-cell', {}, statusBadge(b.status)),
      h('td.progress-col', {}, progressBar(c), progressText(b)),
      h('td.num', { 'data-label': 'Rate' }, runRate(b)),
      h(
        'td.num',
        { 'data-label': 'ETA' },
        live ? (eta === null ? (remaining ? '…' : '—') : fmtDuration(eta)) : '—',
      ),
      h('td.num', { title: fmtTime(b.created_at), 'data-label': 'Age' }, fmtAgo(b.created_at)),
      h('td.actions', {}, actions(b, live)),
    );
  }

  /**
   * @param {DashboardBatch} b
   * @param {boolean} live
   */
  function actions(b, live) {
    const list = [];
    if (live && b.status !== 'cancelling' && b.status !== 'finalizing') {
      list.push(
        h(
          'button.btn.small.danger-ghost',
          {
            type: 'button',
            dataset: { key: `cancel-${b.id}` },
            'aria-label': `Cancel ${b.id}`,
            onclick: (/** @type {MouseEvent} */ e) =>
              cancelBatch(app, b.id, /** @type {HTMLButtonElement} */ (e.currentTarget), load),
          },
          'Cancel',
        ),
      );
    }
    for (const [fileId, label, suffix] of [
      [b.output_file_id, 'Output', 'output'],
      [b.error_file_id, 'Errors', 'errors'],
    ]) {
      if (!fileId) continue;
      list.push(
        h(
          'button.btn.small',
          {
            type: 'button',
            dataset: { key: `${suffix}-${b.id}` },
            'aria-label': `Download ${label?.toLowerCase()} of ${b.id}`,
            onclick: () =>
              downloadFile(fileId, `${b.id}_${suffix}.jsonl`).catch((err) => app.toast(err.message, 'error')),
          },
          `↓ ${label}`,
        ),
      );
    }
    return h('div.btn-row', {}, list);
  }

  /**
   * @param {string} key
   * @param {string} value
   * @param {boolean} [replace] typing a search edits the history entry instead of adding one
   */
  function setFilter(key, value, replace = false) {
    const next = new URLSearchParams(query);
    if (value) next.set(key, value);
    else next.delete(key);
    next.delete('after');
    next.delete('before');
    app.setQuery(next, { replace });
  }

  /** @param {number} delta */
  function page(delta) {
    if (!lastPage) return;
    const next = new URLSearchParams(query);
    next.delete('after');
    next.delete('before');
    if (delta > 0 && lastPage.last_id) next.set('after', lastPage.last_id);
    if (delta < 0 && lastPage.first_id) next.set('before', lastPage.first_id);
    scrollAfterLoad = true;
    app.setQuery(next);
  }

  syncControls();
  app.poll(load, 1500);
  return {
    update(q) {
      query = q;
      syncControls();
      load().catch((err) => app.toast(err.message, 'error'));
    },
  };
}

/**
 * Cancels a batch after the app's dialog confirms it.
 * @param {import('../app-types.d.ts').App} app
 * @param {string} batchId
 * @param {HTMLButtonElement} button
 * @param {() => Promise<void>} reload
 */
export async function cancelBatch(app, batchId, button, reload) {
  const ok = await openDialog({
    title: 'Cancel this batch?',
    body: [
      h('p', {}, h('code', {}, batchId)),
      h('p', {}, 'Requests not yet finished are canceled; results so far are kept in its output file.'),
    ],
    confirmLabel: 'Cancel batch',
    cancelLabel: 'Keep running',
    danger: true,
  });
  if (!ok) return;
  button.disabled = true;
  try {
    await api(`/v1/batches/${encodeURIComponent(batchId)}/cancel`, { method: 'POST' });
    app.toast(`Cancelling ${shortId(batchId)}`);
    await reload();
  } catch (err) {
    app.toast(err instanceof Error ? err.message : String(err), 'error');
    button.disabled = false;
  }
}
