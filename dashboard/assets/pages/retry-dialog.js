// @ts-check
// Retry as a deliberate act: how many failed and why, the choice to retry only those a retry can
// fix, and an explicit confirmation before a batch that has ended is reopened.
import { api } from '../api.js';
import { openDialog } from '../dialog.js';
import { fmtNum, h } from '../dom.js';
import domain from '../domain.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').FailureSummary} FailureSummary */
/** @typedef {import('../../../src/server/dashboard-wire.js').RetryAnswer} RetryAnswer */
/** @typedef {import('../../../src/server/dashboard-wire.js').RetryBody} RetryBody */

const ENDED = new Set(/** @type {readonly string[]} */ (domain.ENDED_BATCH_STATUSES));

/**
 * Asks, then retries; resolves to the server's answer, or null when the user backed out.
 * @param {import('../app-types.d.ts').App} app
 * @param {string} batchId
 * @param {string} status the batch's status now
 * @returns {Promise<RetryAnswer | null>}
 */
export async function retryFailed(app, batchId, status) {
  const enc = encodeURIComponent(batchId);
  const summary = /** @type {FailureSummary} */ (await api(`/api/dashboard/batches/${enc}/failures`));
  if (summary.failed === 0) {
    app.toast('No failed request to retry.');
    return null;
  }
  const ended = ENDED.has(status);
  const radio = (/** @type {'all' | 'retriable'} */ value, /** @type {string} */ text, disabled = false) =>
    h('label.choice', {}, h('input', { type: 'radio', name: 'only', value, disabled }), h('span', {}, text));
  const choices = h(
    'fieldset.choices',
    {},
    h('legend', {}, 'Which requests'),
    radio(
      'retriable',
      `Only the ${fmtNum(summary.retriable)} a retry may fix (429, 5xx, timeouts, connection errors)`,
      summary.retriable === 0,
    ),
    radio('all', `All ${fmtNum(summary.failed)} failed requests`),
  );
  const initial = summary.retriable > 0 ? 'retriable' : 'all';
  const initialInput = /** @type {HTMLInputElement | null} */ (
    choices.querySelector(`input[value="${initial}"]`)
  );
  if (initialInput) initialInput.checked = true;
  const reopen = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: 'retry-reopen' }));
  const chosen = () =>
    /** @type {'all' | 'retriable'} */ (
      /** @type {HTMLInputElement | null} */ (choices.querySelector('input:checked'))?.value ?? 'all'
    );
  const count = () => (chosen() === 'all' ? summary.failed : summary.retriable);

  const ok = await openDialog({
    title: `Retry failed requests of ${batchId}`,
    className: 'retry-dialog',
    body: [
      h('p', {}, `${fmtNum(summary.failed)} requests failed:`),
      h(
        'table.table.breakdown',
        {},
        h('caption.visually-hidden', {}, 'Failed requests by status or error code'),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'col' }, 'Code'),
            h('th.num', { scope: 'col' }, 'Requests'),
            h('th', { scope: 'col' }, 'A retry'),
          ),
        ),
        h(
          'tbody',
          {},
          summary.codes.map((c) =>
            h(
              'tr',
              {},
              h('td.mono', {}, c.code),
              h('td.num', {}, fmtNum(c.count)),
              h(
                'td',
                {},
                c.retriable ? h('span.retriable', {}, 'may succeed') : h('span.muted', {}, 'fails again'),
              ),
            ),
          ),
        ),
      ),
      choices,
      ended
        ? h(
            'label.choice.reopen',
            {},
            reopen,
            h(
              'span',
              {},
              `Reopen this ${status} batch: it runs again, and its output and error files are rewritten when it ends.`,
            ),
          )
        : null,
      h(
        'p.muted',
        {},
        `Their failures stay in the batch's history${summary.retried ? ` (${fmtNum(summary.retried)} retried before)` : ''}.`,
      ),
    ],
    confirmLabel: () => `Retry ${fmtNum(count())} request${count() === 1 ? '' : 's'}`,
    cancelLabel: 'Cancel',
    canConfirm: () => count() > 0 && (!ended || reopen.checked),
  });
  if (!ok) return null;
  /** @type {RetryBody} */
  const body = { only: chosen(), reopen: ended };
  return /** @type {RetryAnswer} */ (
    await api(`/api/dashboard/batches/${enc}/retry`, { method: 'POST', body })
  );
}
