// @ts-check
// A batch's requests table with its triage tools: state filter with counts, failures by code as
// one-click filters, custom_id search, sort by latency or attempts, page size, jump to a line.
// The view's state is the URL's query: state, code, q, sort, size, line (page starts at this
// line), before (page ends before this line), offset (sorted pages).
import { api } from '../api.js';
import { debounce, fmtMs, fmtNum, h, replaceChildren } from '../dom.js';
import domain from '../domain.js';
import { openRequestViewer } from './request-viewer.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').RequestPage} RequestPage */
/** @typedef {import('../../../src/server/dashboard-wire.js').RequestRow} RequestRow */
/** @typedef {import('../../../src/server/dashboard-wire.js').FailureSummary} FailureSummary */
/** @typedef {import('../../../src/server/dashboard-wire.js').BatchProgress} BatchProgress */

const PAGE_SIZES = [25, 50, 100, 200];
const SORTS = [
  ['line', 'Line order'],
  ['latency', 'Slowest first'],
  ['attempts', 'Most attempts first'],
];
/** The keys of the URL's query this table owns; paging keys are reset when a filter changes. */
const PAGING = ['line', 'before', 'offset'];

/** Error codes of requests that never ran to an answer because the batch ended. */
const ENDED_CODES = /** @type {Record<string, string>} */ ({
  batch_cancelled: 'batch cancelled',
  batch_expired: 'batch expired',
});

/**
 * @param {string} batchId
 * @param {import('../app-types.d.ts').App} app
 * @param {URLSearchParams} initialQuery
 */
export function requestsSection(batchId, app, initialQuery) {
  const enc = encodeURIComponent(batchId);
  let query = initialQuery;
  /** @type {RequestPage | null} */
  let lastPage = null;
  /** @type {Record<string, number>} */
  let stateCounts = {};
  /** @type {FailureSummary | null} */
  let failures = null;
  let scrollAfterLoad = false;
  let latest = '';

  const tbody = h('tbody');
  const summary = h('span.muted', { 'aria-live': 'polite' });
  const codesEl = h('div.codes', { role: 'group', 'aria-label': 'Failures by code' });
  const prev = /** @type {HTMLButtonElement} */ (
    h('button.btn.small', { type: 'button', disabled: true, onclick: () => page(-1) }, '← Previous')
  );
  const next = /** @type {HTMLButtonElement} */ (
    h('button.btn.small', { type: 'button', disabled: true, onclick: () => page(1) }, 'Next →')
  );
  const stateSelect = /** @type {HTMLSelectElement} */ (
    h('select', { id: 'state-filter', onchange: () => setFilters({ state: stateSelect.value, code: '' }) })
  );
  const search = /** @type {HTMLInputElement} */ (
    h('input', {
      id: 'custom-id-search',
      type: 'search',
      placeholder: 'custom_id contains…',
      autocomplete: 'off',
      oninput: debounce(() => setFilters({ q: search.value.trim() }, true), 300),
    })
  );
  const sortSelect = /** @type {HTMLSelectElement} */ (
    h(
      'select',
      {
        id: 'sort',
        onchange: () => setFilters({ sort: sortSelect.value === 'line' ? '' : sortSelect.value }),
      },
      SORTS.map(([v, label]) => h('option', { value: v }, label)),
    )
  );
  const sizeSelect = /** @type {HTMLSelectElement} */ (
    h(
      'select',
      {
        id: 'page-size',
        onchange: () => setFilters({ size: sizeSelect.value === '25' ? '' : sizeSelect.value }),
      },
      PAGE_SIZES.map((n) => h('option', { value: String(n) }, String(n))),
    )
  );
  const jumpInput = /** @type {HTMLInputElement} */ (
    h('input.line-input', {
      id: 'jump-line',
      type: 'number',
      min: 0,
      inputmode: 'numeric',
      placeholder: 'line',
    })
  );
  const jumpForm = h(
    'form.jump',
    {
      onsubmit: (/** @type {SubmitEvent} */ e) => {
        e.preventDefault();
        const line = Number.parseInt(jumpInput.value, 10);
        if (!Number.isFinite(line) || line < 0) return;
        scrollAfterLoad = true;
        setFilters({ sort: '', line: String(line) });
      },
    },
    h('label', { for: 'jump-line' }, 'Jump to line'),
    h('div.jump-row', {}, jumpInput, h('button.btn', { type: 'submit' }, 'Go')),
  );

  const table = h(
    'table.table.requests',
    {},
    h('caption.visually-hidden', {}, 'Requests of this batch'),
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
  );
  const element = h(
    'section.card.table-card.requests-card',
    { 'aria-labelledby': 'requests-title' },
    h('div.card-head', {}, h('h2', { id: 'requests-title' }, 'Requests'), summary),
    codesEl,
    h(
      'div.toolbar.inset',
      { role: 'search', 'aria-label': 'Filter requests' },
      h('div.field', {}, h('label', { for: 'state-filter' }, 'State'), stateSelect),
      h('div.field.grow', {}, h('label', { for: 'custom-id-search' }, 'Search custom_id'), search),
      h('div.field', {}, h('label', { for: 'sort' }, 'Sort'), sortSelect),
      h('div.field', {}, h('label', { for: 'page-size' }, 'Rows'), sizeSelect),
      h('div.field', {}, jumpForm),
    ),
    h('div.table-scroll', {}, table),
    h('div.pager', {}, prev, next),
  );

  function syncControls() {
    renderStateOptions();
    sortSelect.value = query.get('sort') || 'line';
    sizeSelect.value = query.get('size') || '25';
    if (document.activeElement !== search) search.value = query.get('q') ?? '';
    renderCodes();
  }

  function renderStateOptions() {
    const counts = stateCounts;
    const all = Object.values(counts).reduce((a, b) => a + b, 0);
    const label = (/** @type {string} */ s) => (counts[s] === undefined ? s : `${s} (${fmtNum(counts[s])})`);
    // claimed is a reserved state: listed only if rows are in it.
    const states = domain.REQUEST_STATES.filter((s) => s !== 'claimed' || (counts[s] ?? 0) > 0);
    const value = query.get('state') ?? '';
    replaceChildren(
      stateSelect,
      h('option', { value: '' }, all ? `All states (${fmtNum(all)})` : 'All states'),
      states.map((s) => h('option', { value: s }, label(s))),
    );
    stateSelect.value = value;
  }

  function renderCodes() {
    if (!failures || failures.codes.length === 0) {
      replaceChildren(codesEl);
      codesEl.hidden = true;
      return;
    }
    codesEl.hidden = false;
    const active = query.get('code') ?? '';
    replaceChildren(
      codesEl,
      h('span.codes-label', {}, 'Failed by code'),
      failures.codes.map((c) =>
        h(
          'button.code-chip',
          {
            type: 'button',
            'aria-pressed': String(active === c.code),
            dataset: { key: `code-${c.code}`, code: c.code },
            title: c.retriable ? 'A retry may succeed' : 'A retry would fail the same way',
            onclick: () => setFilters(active === c.code ? { code: '' } : { code: c.code, state: 'failed' }),
          },
          h('span.code-name', {}, c.code),
          h('span.code-count', {}, fmtNum(c.count)),
          c.retriable ? h('span.retriable', {}, 'retriable') : null,
        ),
      ),
      active
        ? h(
            'button.btn.small.ghost',
            { type: 'button', onclick: () => setFilters({ code: '' }) },
            'Clear code',
          )
        : null,
    );
  }

  function apiParams() {
    const size = PAGE_SIZES.includes(Number(query.get('size'))) ? Number(query.get('size')) : 25;
    const params = new URLSearchParams({ limit: String(size) });
    const sort = query.get('sort');
    for (const [k, apiKey] of [
      ['state', 'state'],
      ['code', 'code'],
      ['q', 'q'],
    ]) {
      const v = query.get(k ?? '');
      if (v) params.set(apiKey ?? '', v);
    }
    if (sort === 'latency' || sort === 'attempts') {
      params.set('sort', sort);
      const offset = query.get('offset');
      if (offset) params.set('offset', offset);
    } else if (query.get('before')) params.set('before_line', query.get('before') ?? '');
    else if (query.get('line')) params.set('from_line', query.get('line') ?? '');
    return params.toString();
  }

  async function load() {
    const key = apiParams();
    latest = key;
    const result = /** @type {RequestPage} */ (await api(`/api/dashboard/batches/${enc}/requests?${key}`));
    if (latest !== key) return;
    lastPage = result;
    render(result);
    if (scrollAfterLoad && element.getBoundingClientRect().top < 0)
      element.scrollIntoView({ block: 'start' });
    scrollAfterLoad = false;
  }

  /** @param {RequestPage} p */
  function render(p) {
    const rows = p.data;
    prev.disabled = !p.has_previous;
    next.disabled = !p.has_more;
    const filtered = ['state', 'code', 'q'].some((k) => query.get(k));
    const matching = `${fmtNum(p.total)} ${filtered ? 'matching' : p.total === 1 ? 'request' : 'requests'}`;
    if (rows.length === 0) summary.textContent = matching;
    else if (p.offset !== null)
      summary.textContent = `${matching} · rows ${fmtNum(p.offset + 1)}–${fmtNum(p.offset + rows.length)}`;
    else summary.textContent = `${matching} · lines ${fmtNum(rows[0]?.line)}–${fmtNum(rows.at(-1)?.line)}`;
    if (rows.length === 0) {
      replaceChildren(
        tbody,
        h(
          'tr',
          {},
          h(
            'td.empty',
            { colspan: 7 },
            filtered
              ? 'No request matches these filters.'
              : p.has_previous
                ? 'No more requests.'
                : 'No requests.',
          ),
        ),
      );
      return;
    }
    replaceChildren(tbody, rows.map(row));
  }

  /** @param {RequestRow} r */
  function row(r) {
    return h(
      'tr',
      { dataset: { id: r.id, line: String(r.line) } },
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
      h('td.num', {}, outcome(r)),
      h('td.num', {}, fmtMs(r.latency_ms)),
    );
  }

  /** @param {RequestRow} r */
  function outcome(r) {
    if (r.status_code) return h(`span.code.code-${String(r.status_code)[0]}xx`, {}, r.status_code);
    if (r.error_code && ENDED_CODES[r.error_code])
      return h('span.code.code-ended', { title: r.error_code }, ENDED_CODES[r.error_code]);
    if (r.error_code) return h('span.code.code-x', { title: r.error_code }, r.error_code);
    return '—';
  }

  /**
   * Changes filters (and resets paging): a new history entry, or the same one while typing.
   * @param {Record<string, string>} changes
   * @param {boolean} [replace]
   */
  function setFilters(changes, replace = false) {
    const next = new URLSearchParams(query);
    for (const k of PAGING) next.delete(k);
    for (const [k, v] of Object.entries(changes)) {
      if (v) next.set(k, v);
      else next.delete(k);
    }
    app.setQuery(next, { replace });
  }

  /** @param {number} delta */
  function page(delta) {
    if (!lastPage) return;
    const next = new URLSearchParams(query);
    for (const k of PAGING) next.delete(k);
    const rows = lastPage.data;
    if (lastPage.offset !== null) {
      const size = rows.length || 25;
      const offset = Math.max(
        0,
        lastPage.offset + delta * Number(new URLSearchParams(apiParams()).get('limit') ?? size),
      );
      if (offset > 0) next.set('offset', String(offset));
    } else if (delta > 0 && rows.length) next.set('line', String((rows.at(-1)?.line ?? 0) + 1));
    else if (delta < 0 && rows.length) next.set('before', String(rows[0]?.line ?? 0));
    scrollAfterLoad = true;
    app.setQuery(next);
  }

  syncControls();
  return {
    element,
    load,
    /** @param {URLSearchParams} q */
    update(q) {
      query = q;
      syncControls();
      return load();
    },
    /** @param {BatchProgress} progress */
    setProgress(progress) {
      stateCounts = /** @type {Record<string, number>} */ (progress.state_counts);
      renderStateOptions();
    },
    /** @param {FailureSummary | null} summary */
    setFailures(summary) {
      failures = summary;
      renderCodes();
    },
    /** Whether a custom_id search is on (it reads all templates, so it refreshes less often). */
    get searching() {
      return Boolean(query.get('q'));
    },
  };
}
