import { api, downloadFile } from '../api.js';
import { legend, progressBar } from '../charts.js';
import {
  debounce,
  fmtAgo,
  fmtDuration,
  fmtNum,
  fmtPercent,
  fmtRate,
  fmtTime,
  h,
  LIVE_STATUSES,
  replaceChildren,
  shortId,
  statusBadge,
} from '../dom.js';

const STATUSES = ['in_progress', 'finalizing', 'completed', 'cancelling', 'cancelled', 'expired'];
const PAGE_SIZE = 20;

/** The batches list: newest first, paged, filtered by status and searched, refreshed live. */
export function mount(main, app) {
  document.title = 'Batches · fusillade';
  const state = { status: '', q: '', cursors: [null] };
  const body = h('tbody');
  const summary = h('p.muted.count', { 'aria-live': 'polite' });
  const prev = h('button.btn.small', { type: 'button', onclick: () => page(-1) }, '← Newer');
  const next = h('button.btn.small', { type: 'button', onclick: () => page(1) }, 'Older →');
  let lastPage = { data: [], has_more: false };

  const statusSelect = h(
    'select',
    {
      id: 'status-filter',
      onchange: (e) => {
        state.status = e.target.value;
        restart();
      },
    },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((s) => h('option', { value: s }, s.replace('_', ' '))),
  );
  const search = h('input', {
    id: 'batch-search',
    type: 'search',
    placeholder: 'batch_… or metadata',
    autocomplete: 'off',
    oninput: debounce((e) => {
      state.q = e.target.value.trim();
      restart();
    }, 250),
  });

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
              h('th.num', { scope: 'col' }, 'Rate'),
              h('th.num', { scope: 'col' }, 'ETA'),
              h('th.num', { scope: 'col' }, 'Age'),
              h('th', { scope: 'col' }, h('span.visually-hidden', {}, 'Actions')),
            ),
          ),
          body,
        ),
      ),
      h('div.pager', {}, prev, next),
    ),
  );

  async function load() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) params.set('status', state.status);
    if (state.q) params.set('q', state.q);
    const after = state.cursors.at(-1);
    if (after) params.set('after', after);
    const requested = params.toString();
    const result = await api(`/api/dashboard/batches?${requested}`);
    if (requested !== currentParams()) return; // the filters changed while this was loading
    lastPage = result;
    render();
  }

  function currentParams() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) params.set('status', state.status);
    if (state.q) params.set('q', state.q);
    const after = state.cursors.at(-1);
    if (after) params.set('after', after);
    return params.toString();
  }

  function render() {
    const rows = lastPage.data;
    const live = rows.filter((b) => LIVE_STATUSES.has(b.status)).length;
    summary.textContent =
      rows.length === 0
        ? ''
        : `Page ${state.cursors.length} · ${rows.length} batch${rows.length === 1 ? '' : 'es'}${live ? ` · ${live} running` : ''}`;
    prev.disabled = state.cursors.length <= 1;
    next.disabled = !lastPage.has_more;
    if (rows.length === 0) {
      const filtered = state.status || state.q;
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

  function row(b) {
    const c = b.counts;
    const done = c.completed + c.failed + c.canceled;
    const live = LIVE_STATUSES.has(b.status);
    const remaining = c.pending + c.in_progress;
    const eta = live && b.recent_rate > 0 ? remaining / b.recent_rate : null;
    const elapsed = (b.finished_at ?? Date.now() / 1000) - (b.in_progress_at ?? b.created_at);
    const rate = live ? b.recent_rate : elapsed > 0 ? (c.completed + c.failed) / elapsed : null;
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
      h('td', {}, statusBadge(b.status)),
      h(
        'td.progress-col',
        {},
        progressBar(c),
        h(
          'div.sub.counts',
          {},
          h('span', {}, `${fmtNum(done)} / ${fmtNum(c.total)}`),
          h('span.muted', {}, fmtPercent(done, c.total)),
          c.failed > 0 ? h('span.fail-count', {}, `${fmtNum(c.failed)} failed`) : null,
        ),
      ),
      h('td.num', {}, fmtRate(rate), live ? null : h('div.sub.muted', {}, 'avg')),
      h('td.num', {}, live ? (eta === null ? (remaining ? '…' : '—') : fmtDuration(eta)) : '—'),
      h('td.num', { title: fmtTime(b.created_at) }, fmtAgo(b.created_at)),
      h('td.actions', {}, actions(b, live)),
    );
  }

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
            onclick: async (e) => {
              if (
                !confirm(
                  `Cancel ${b.id}? Requests not yet finished will be canceled; results so far are kept.`,
                )
              )
                return;
              e.target.disabled = true;
              try {
                await api(`/v1/batches/${b.id}/cancel`, { method: 'POST' });
                app.toast(`Cancelling ${shortId(b.id)}`);
                await load();
              } catch (err) {
                app.toast(err.message, 'error');
                e.target.disabled = false;
              }
            },
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
            'aria-label': `Download ${label.toLowerCase()} of ${b.id}`,
            onclick: () =>
              downloadFile(fileId, `${b.id}_${suffix}.jsonl`).catch((err) => app.toast(err.message, 'error')),
          },
          `↓ ${label}`,
        ),
      );
    }
    return h('div.btn-row', {}, list);
  }

  function restart() {
    state.cursors = [null];
    load().catch((err) => app.toast(err.message, 'error'));
  }

  function page(delta) {
    if (delta > 0 && lastPage.data.length) state.cursors.push(lastPage.data.at(-1).id);
    if (delta < 0 && state.cursors.length > 1) state.cursors.pop();
    load().catch((err) => app.toast(err.message, 'error'));
  }

  app.poll(load, 1500);
}
