// @ts-check
import { api } from '../api.js';
import { openDialog } from '../dialog.js';
import { fmtAgo, h, replaceChildren, shortId } from '../dom.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').WebhookEndpoint} WebhookEndpoint */
/** @typedef {import('../../../src/server/dashboard-wire.js').CreatedWebhookEndpoint} CreatedWebhookEndpoint */
/** @typedef {import('../../../src/server/dashboard-wire.js').WebhookDelivery} WebhookDelivery */

const EVENTS = /** @type {const} */ (['batch.completed', 'batch.failed', 'batch.expired', 'batch.cancelled']);
const BASE = '/api/dashboard/webhooks';

/**
 * The webhooks page: the owner's endpoints (add, remove, enable one that was disabled after failing
 * repeatedly) and their recent deliveries. The signing secret is shown once, when an endpoint is added.
 * @type {import('../app-types.d.ts').Mount}
 */
export function mount(main, app) {
  document.title = 'Webhooks · fusillade';
  const endpoints = h('tbody');
  const deliveries = h('tbody');
  const secretBox = h('div');
  const formError = h('p.form-error', { role: 'alert' });
  const url = /** @type {HTMLInputElement} */ (
    h('input', { id: 'webhook-url', type: 'url', required: true, placeholder: 'https://example.com/hooks' })
  );
  const boxes = EVENTS.map(
    (e) => /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', value: e, checked: true })),
  );

  /**
   * @param {string} caption
   * @param {string[]} heads
   * @param {HTMLElement} body
   */
  const table = (caption, heads, body) =>
    h(
      'div.table-scroll',
      {},
      h(
        'table.table',
        {},
        h('caption.visually-hidden', {}, caption),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            heads.map((label) => h('th', { scope: 'col' }, label)),
          ),
        ),
        body,
      ),
    );

  const refresh = async () => {
    const [list, recent] = await Promise.all([
      api(BASE).then((r) => /** @type {{ data: WebhookEndpoint[] }} */ (r)),
      api(`${BASE}/deliveries?limit=20`).then((r) => /** @type {{ data: WebhookDelivery[] }} */ (r)),
    ]);
    replaceChildren(
      endpoints,
      list.data.length === 0
        ? h('tr', {}, h('td.muted', { colspan: '5' }, 'No endpoints yet: add one above.'))
        : list.data.map(endpointRow),
    );
    replaceChildren(
      deliveries,
      recent.data.length === 0
        ? h('tr', {}, h('td.muted', { colspan: '6' }, 'No deliveries yet.'))
        : recent.data.map(deliveryRow),
    );
  };

  /** @param {WebhookEndpoint} e */
  const endpointRow = (e) =>
    h(
      'tr',
      { dataset: { endpoint: e.id } },
      h('td.mono', {}, e.url),
      h('td', {}, e.events.join(', ')),
      h(
        'td',
        {},
        h(`span.badge.${e.status === 'active' ? 'status-completed' : 'status-failed'}`, {}, e.status),
        e.failures > 0 ? h('div.muted', {}, `${e.failures} failed in a row`) : null,
        e.last_error ? h('div.muted', {}, e.last_error) : null,
      ),
      h('td', {}, e.last_success_at ? fmtAgo(e.last_success_at) : '—'),
      h(
        'td.actions',
        {},
        e.status === 'disabled'
          ? h(
              'button.btn.small',
              { type: 'button', onclick: () => act(`${BASE}/${e.id}/enable`, 'POST', 'Enabled.') },
              'Enable',
            )
          : null,
        h(
          'button.btn.small.danger',
          {
            type: 'button',
            onclick: async () => {
              const ok = await openDialog({
                title: 'Remove this endpoint?',
                body: [h('p', {}, `${e.url} will receive no more events.`)],
                confirmLabel: 'Remove',
                cancelLabel: 'Keep',
                danger: true,
              });
              if (ok) await act(`${BASE}/${e.id}`, 'DELETE', 'Removed.');
            },
          },
          'Remove',
        ),
      ),
    );

  /** @param {WebhookDelivery} d */
  const deliveryRow = (d) =>
    h(
      'tr',
      {},
      h('td', {}, d.type),
      h(
        'td.mono',
        {},
        h('a.batch-link', { href: `#/batches/${encodeURIComponent(d.batch_id)}` }, shortId(d.batch_id)),
      ),
      h('td', {}, d.state),
      h('td.num', {}, String(d.attempts)),
      h('td', {}, d.last_status === null ? (d.last_error ?? '—') : String(d.last_status)),
      h('td', {}, fmtAgo(d.created_at)),
    );

  /**
   * @param {string} path
   * @param {string} method
   * @param {string} done
   */
  const act = async (path, method, done) => {
    try {
      await api(path, { method });
      app.toast(done);
      await refresh();
    } catch (err) {
      app.toast(err instanceof Error ? err.message : String(err), 'error');
    }
  };

  const form = h(
    'form.toolbar',
    {
      onsubmit: async (/** @type {SubmitEvent} */ ev) => {
        ev.preventDefault();
        formError.textContent = '';
        const events = boxes.filter((b) => b.checked).map((b) => b.value);
        if (events.length === 0) {
          formError.textContent = 'Choose at least one event.';
          return;
        }
        try {
          const created = /** @type {CreatedWebhookEndpoint} */ (
            await api(BASE, { method: 'POST', body: { url: url.value, events } })
          );
          url.value = '';
          replaceChildren(
            secretBox,
            h(
              'div.card',
              { role: 'status' },
              h('p', {}, `Signing secret of ${created.url} (shown once: keep it now):`),
              h('p.mono.code', { id: 'webhook-secret' }, created.secret),
            ),
          );
          await refresh();
        } catch (err) {
          formError.textContent = err instanceof Error ? err.message : String(err);
        }
      },
    },
    h('div.field.grow', {}, h('label', { for: 'webhook-url' }, 'Receiver URL'), url),
    h(
      'fieldset.choices',
      {},
      h('legend', {}, 'Events'),
      boxes.map((b) => h('label.choice', {}, b, ` ${b.value}`)),
    ),
    h('button.btn.primary', { type: 'submit' }, 'Add endpoint'),
  );

  main.append(
    h(
      'div.page',
      {},
      h(
        'div.page-head',
        {},
        h('h1', {}, 'Webhooks'),
        h(
          'p.muted',
          {},
          'Endpoints hear when your batches end, signed per the Standard Webhooks spec; an endpoint that keeps failing is disabled until you enable it.',
        ),
      ),
      h(
        'section.card',
        { 'aria-labelledby': 'add-title' },
        h('h2', { id: 'add-title' }, 'Add an endpoint'),
        form,
        formError,
        secretBox,
      ),
      h(
        'section.card.table-card',
        { 'aria-labelledby': 'endpoints-title' },
        h('div.card-head', {}, h('h2', { id: 'endpoints-title' }, 'Endpoints')),
        table('Webhook endpoints', ['URL', 'Events', 'Status', 'Last success', ''], endpoints),
      ),
      h(
        'section.card.table-card',
        { 'aria-labelledby': 'deliveries-title' },
        h('div.card-head', {}, h('h2', { id: 'deliveries-title' }, 'Recent deliveries')),
        table(
          'Recent webhook deliveries',
          ['Event', 'Batch', 'State', 'Attempts', 'Last answer', 'Created'],
          deliveries,
        ),
      ),
    ),
  );
  app.poll(refresh, 5000);
  return undefined;
}
