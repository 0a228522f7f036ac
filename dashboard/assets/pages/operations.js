// @ts-check
import { api } from '../api.js';
import { chartWidth, lineChart, meter } from '../charts.js';
import { fmtAgo, fmtDuration, fmtNum, h, replaceChildren } from '../dom.js';

/** @typedef {import('../../../src/server/dashboard-wire.js').Operations} Operations */

/**
 * The operations page: the owner's load per model against limits, dispatch rate, queue; daemons.
 * @type {import('../app-types.d.ts').Mount}
 */
export function mount(main, app) {
  document.title = 'Operations · fusillade';
  const stats = h('div.stats');
  const models = h('tbody');
  const chart = h('div.chart-box');
  const chartLegend = h('ul.legend.models-legend', { 'aria-hidden': 'true' });
  const daemons = h('tbody');

  /**
   * @param {string} caption
   * @param {[string, string?][]} heads
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
            heads.map(([label, cls = '']) => h(`th${cls}`, { scope: 'col' }, label)),
          ),
        ),
        body,
      ),
    );

  main.append(
    h(
      'div.page',
      {},
      h(
        'div.page-head',
        {},
        h('h1', {}, 'Operations'),
        h(
          'p.muted',
          {},
          'Your batches’ load per model and queue; the daemons and model limits are shared by all owners.',
        ),
      ),
      stats,
      h(
        'div.grid-2.ops',
        {},
        h(
          'section.card.table-card',
          { 'aria-labelledby': 'models-title' },
          h('div.card-head', {}, h('h2', { id: 'models-title' }, 'Models: in flight vs limit')),
          table(
            'Requests in flight per model against its limit',
            [
              ['Model'],
              ['In flight', '.meter-col'],
              ['Pending', '.num'],
              ['Sent, last min', '.num'],
              ['Rate limit, last min'],
            ],
            models,
          ),
        ),
        h(
          'section.card',
          { 'aria-labelledby': 'dispatch-title' },
          h(
            'div.card-head',
            {},
            h('h2', { id: 'dispatch-title' }, 'Dispatch rate, last 15 minutes'),
            chartLegend,
          ),
          chart,
        ),
      ),
      h(
        'section.card.table-card',
        { 'aria-labelledby': 'daemons-title' },
        h('div.card-head', {}, h('h2', { id: 'daemons-title' }, 'Daemons')),
        table(
          'Daemons with their health, uptime, last heartbeat and requests in flight',
          [
            ['Host'],
            ['PID', '.num'],
            ['Version'],
            ['Health'],
            ['Uptime', '.num'],
            ['Last heartbeat', '.num'],
            ['In flight', '.num'],
          ],
          daemons,
        ),
      ),
    ),
  );

  async function load() {
    const ops = /** @type {Operations} */ (await api('/api/dashboard/operations'));
    const perMinute = 60 / ops.dispatch.bucket_seconds;
    const alive = ops.daemons.filter((d) => d.health === 'alive').length;
    /**
     * @param {string} label
     * @param {string} value
     * @param {string} [hint]
     * @param {string} [cls]
     */
    const stat = (label, value, hint, cls = '') =>
      h(
        `div.stat${cls}`,
        {},
        h('div.stat-label', {}, label),
        h('div.stat-value', {}, value),
        hint ? h('div.stat-hint', {}, hint) : null,
      );
    replaceChildren(
      stats,
      stat('Pending', fmtNum(ops.queue.pending), 'in live batches'),
      stat('Ready now', fmtNum(ops.queue.ready), 'not backing off'),
      stat('In flight', fmtNum(ops.queue.in_flight), 'claimed or sent', '.info'),
      stat('Live batches', fmtNum(ops.queue.live_batches)),
      stat(
        'Daemons alive',
        `${alive}`,
        ops.daemons.length > alive ? `${ops.daemons.length - alive} stale or stopped` : '',
        alive ? '.ok' : '.bad',
      ),
    );

    const series = new Map(ops.dispatch.series.map((s) => [s.model, s.counts]));
    // Sends over the last minute (the newest buckets, the last one still filling).
    const lastMinute = (/** @type {string} */ model) =>
      (series.get(model) ?? []).slice(-Math.max(1, Math.round(perMinute))).reduce((a, b) => a + b, 0);
    replaceChildren(
      models,
      ops.models.length === 0
        ? h('tr', {}, h('td.empty', { colspan: 5 }, 'No models yet.'))
        : ops.models.map((m) =>
            h(
              'tr',
              {},
              h('td.mono', {}, m.model),
              h(
                'td.meter-col',
                {},
                h(
                  'div.meter-row',
                  {},
                  meter(m.in_flight, m.limit, `${m.model}: ${m.in_flight} in flight of ${m.limit}`),
                  h('span.meter-text', {}, `${fmtNum(m.in_flight)} / ${fmtNum(m.limit)}`),
                  m.limit > 0 && m.in_flight >= m.limit ? h('span.at-limit', {}, 'at limit') : null,
                ),
              ),
              h('td.num', {}, fmtNum(m.pending)),
              h('td.num', {}, fmtNum(lastMinute(m.model))),
              h('td', {}, rateCell(m.rate)),
            ),
          ),
    );

    const lines = ops.dispatch.series.map((s) => ({
      label: s.model,
      values: s.counts.map((c) => c * perMinute),
    }));
    replaceChildren(
      chartLegend,
      lines.map((s, k) => h('li', {}, h(`span.swatch.s${k % 8}`), s.label)),
    );
    replaceChildren(
      chart,
      lines.length === 0
        ? h('p.empty', {}, 'Nothing was sent in the last 15 minutes.')
        : lineChart({
            width: chartWidth(chart),
            height: 220,
            start: ops.dispatch.start,
            bucketSeconds: ops.dispatch.bucket_seconds,
            series: lines,
            label: `Requests sent per minute by model over the last 15 minutes: ${lines.map((s) => s.label).join(', ')}`,
          }),
      lines.length
        ? h('p.chart-note', {}, `Requests sent per minute, in ${ops.dispatch.bucket_seconds} s steps`)
        : null,
    );

    replaceChildren(
      daemons,
      ops.daemons.length === 0
        ? h('tr', {}, h('td.empty', { colspan: 7 }, 'No daemon has run in the last hour.'))
        : ops.daemons.map((d) =>
            h(
              'tr',
              {},
              h('td.mono', { title: d.id }, d.host),
              h('td.num', {}, d.pid),
              h('td', {}, d.version ?? '—'),
              h('td', {}, h(`span.badge.health-${d.health}`, {}, d.health)),
              h('td.num', {}, fmtDuration((d.stopped_at ?? ops.now) - d.started_at)),
              h('td.num', {}, fmtAgo(d.heartbeat_at)),
              h('td.num', {}, fmtNum(d.in_flight)),
            ),
          ),
    );
  }

  /**
   * Per-minute budget and use, pause and adaptive concurrency of a model (issue 11).
   * @param {Operations['models'][number]['rate']} r
   */
  function rateCell(r) {
    if (!r) return '—';
    const use = [];
    if (r.tpm !== null) use.push(`${fmtNum(r.tokens_per_minute)} / ${fmtNum(r.tpm)} tokens`);
    if (r.rpm !== null) use.push(`${fmtNum(r.requests_per_minute)} / ${fmtNum(r.rpm)} requests`);
    if (use.length === 0 && r.requests_per_minute > 0) use.push(`${fmtNum(r.requests_per_minute)} requests`);
    return h(
      'div.rate-cell',
      {},
      use.length ? h('span', {}, use.join(' · ')) : null,
      r.source === 'learned' ? h('span.muted', {}, ' (from the upstream’s headers)') : null,
      r.paused_until !== null && r.paused_until * 1000 > Date.now()
        ? h('div.at-limit', {}, `paused until ${new Date(r.paused_until * 1000).toLocaleTimeString()}`)
        : null,
      r.adaptive_concurrency !== null
        ? h('div.muted', {}, `adaptive concurrency ${r.adaptive_concurrency}`)
        : null,
    );
  }

  app.poll(load, 2000);
  return undefined;
}
