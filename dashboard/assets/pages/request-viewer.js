// @ts-check
import { api } from '../api.js';
import { outside, refocus } from '../dialog.js';
import { fmtMs, fmtTime, h, prettyJson } from '../dom.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').RequestDetail} RequestDetail */

/**
 * A modal viewer of one request: its body, the upstream's response, the error, and the failures
 * a retry put behind it.
 * @param {string} batchId
 * @param {string} requestId
 * @param {import('../app-types.d.ts').App} app
 */
export async function openRequestViewer(batchId, requestId, app) {
  const opener = /** @type {HTMLElement | null} */ (document.activeElement);
  /** @type {RequestDetail} */
  let r;
  try {
    r = /** @type {RequestDetail} */ (
      await api(
        `/api/dashboard/batches/${encodeURIComponent(batchId)}/requests/${encodeURIComponent(requestId)}`,
      )
    );
  } catch (err) {
    app.toast(err instanceof Error ? err.message : String(err), 'error');
    return;
  }
  /** @type {[string, string, string | null][]} */
  const tabs = [
    ['request', 'Request', `${r.method} ${r.path}\n\n${prettyJson(r.body)}`],
    ['response', 'Response', r.response_body === null ? null : prettyJson(r.response_body)],
    ['error', 'Error', errorText(r)],
  ];
  if (r.history.length > 0) tabs.push(['history', `Earlier failures (${r.history.length})`, historyText(r)]);
  const initial =
    r.state === 'failed' || r.state === 'canceled'
      ? r.response_body
        ? 'response'
        : 'error'
      : r.response_body
        ? 'response'
        : 'request';
  /** @type {HTMLElement[]} */
  const tabButtons = [];
  /** @type {HTMLElement[]} */
  const panels = [];
  const select = (/** @type {string} */ id, focus = false) => {
    for (const b of tabButtons) {
      const on = b.dataset.tab === id;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
      if (on && focus) b.focus();
    }
    for (const p of panels) p.hidden = p.dataset.tab !== id;
  };
  for (const [id, label, text] of tabs) {
    tabButtons.push(
      h(
        'button.tab',
        {
          type: 'button',
          role: 'tab',
          id: `tab-${id}`,
          'aria-controls': `panel-${id}`,
          dataset: { tab: id },
          onclick: () => select(id),
        },
        label,
        text === null ? h('span.muted', {}, ' (none)') : null,
      ),
    );
    panels.push(
      h(
        'div.tab-panel',
        {
          role: 'tabpanel',
          id: `panel-${id}`,
          'aria-labelledby': `tab-${id}`,
          dataset: { tab: id },
          tabindex: 0,
        },
        text === null
          ? h('p.muted', {}, `No ${label.toLowerCase()} for this request.`)
          : h('pre.code-block', {}, text),
      ),
    );
  }
  const tabList = h(
    'div.tabs',
    {
      role: 'tablist',
      'aria-label': 'Request details',
      onkeydown: (/** @type {KeyboardEvent} */ e) => {
        if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
        const i = tabButtons.findIndex((b) => b.getAttribute('aria-selected') === 'true');
        const j = (i + (e.key === 'ArrowRight' ? 1 : tabButtons.length - 1)) % tabButtons.length;
        select(tabButtons[j]?.dataset.tab ?? initial, true);
      },
    },
    tabButtons,
  );
  const fact = (/** @type {string} */ label, /** @type {string | number | null} */ value) =>
    h('div.fact', {}, h('dt', {}, label), h('dd', {}, value ?? '—'));
  const dialog = /** @type {HTMLDialogElement} */ (
    h(
      'dialog.viewer',
      { 'aria-labelledby': 'viewer-title' },
      h(
        'div.viewer-head',
        {},
        h('h2', { id: 'viewer-title' }, r.custom_id ?? `Line ${r.line}`),
        h(`span.state.state-${r.state}`, {}, r.state),
        h(
          'button.btn.ghost.small.close',
          { type: 'button', 'aria-label': 'Close', onclick: () => dialog.close() },
          '✕',
        ),
      ),
      h(
        'dl.facts',
        {},
        fact('Line', r.line),
        fact('Model', r.model),
        fact('Attempts', r.attempts),
        fact('Status code', r.status_code),
        fact('Latency', fmtMs(r.latency_ms)),
        fact('Finished', fmtTime(r.completed_at)),
        r.upstream_request_id ? fact('Upstream id', r.upstream_request_id) : null,
      ),
      tabList,
      panels,
    )
  );
  dialog.addEventListener('close', () => {
    dialog.remove();
    refocus(opener);
  });
  // A click on the backdrop (outside the dialog's box) closes it, like Escape.
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog && outside(dialog, e)) dialog.close();
  });
  document.body.append(dialog);
  select(initial);
  dialog.showModal();
  tabButtons.find((b) => b.dataset.tab === initial)?.focus();
}

/**
 * The error code and message; for an upstream refusal, its status and the message in its body.
 * @param {RequestDetail} r
 */
function errorText(r) {
  if (r.error_code || r.error_message) return `${r.error_code ?? ''}\n${r.error_message ?? ''}`.trim();
  if (r.state !== 'failed' || !r.status_code) return null;
  let message = '';
  try {
    const body = JSON.parse(r.response_body ?? '');
    message = body?.error?.message ?? (typeof body?.error === 'string' ? body.error : '');
  } catch {
    message = r.response_body ?? '';
  }
  return `The upstream answered HTTP ${r.status_code}${message ? `:\n${message}` : '.'}`;
}

/**
 * The failed attempts a retry put back to pending, oldest first.
 * @param {RequestDetail} r
 */
function historyText(r) {
  return r.history
    .map((f) => {
      const what = f.status_code ? `HTTP ${f.status_code}` : (f.error_code ?? 'failed');
      const message = f.error_message ?? (f.response_body ? prettyJson(f.response_body) : '');
      return `Attempt ${f.attempt} · ${what} · failed ${fmtTime(f.failed_at)} · retried ${fmtTime(f.retried_at)}${message ? `\n${message}` : ''}`;
    })
    .join('\n\n');
}
