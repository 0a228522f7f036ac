// @ts-check
// Charts drawn as inline SVG and plain elements: no chart library, nothing fetched from elsewhere.
import { fmtNum, fmtPercent, h } from './dom.js';

/** @type {[Segment, string][]} */
const SEGMENTS = [
  ['completed', 'completed'],
  ['failed', 'failed'],
  ['canceled', 'canceled'],
  ['in_progress', 'in progress'],
  ['pending', 'pending'],
];

/** @typedef {import('../../src/server/dashboard-wire.js').BatchCounts} BatchCounts */
/** @typedef {'completed' | 'failed' | 'canceled' | 'in_progress' | 'pending'} Segment */

/**
 * The stacked progress bar: completed / failed / canceled / in progress / pending.
 * @param {BatchCounts} counts
 * @param {{ large?: boolean }} [options]
 */
export function progressBar(counts, { large = false } = {}) {
  const total = counts.total || 1;
  const parts = SEGMENTS.filter(([k]) => counts[k] > 0);
  const label = parts.map(([k, name]) => `${fmtNum(counts[k])} ${name}`).join(', ') || 'no requests';
  return h(
    `div.progress${large ? '.large' : ''}`,
    { role: 'img', 'aria-label': `Progress: ${label} of ${fmtNum(counts.total)}` },
    parts.map(([k, name]) =>
      h(`span.seg.seg-${k}`, {
        style: { width: `${(100 * counts[k]) / total}%` },
        title: `${fmtNum(counts[k])} ${name} (${fmtPercent(counts[k], counts.total)})`,
      }),
    ),
  );
}

/** @param {[string, string][]} items class and label of each entry */
export function legend(items) {
  return h(
    'ul.legend',
    { 'aria-hidden': 'true' },
    items.map(([cls, label]) => h('li', {}, h(`span.swatch.${cls}`), label)),
  );
}

/**
 * The limit-aware meter of in-flight requests (role=meter for assistive technology). A model at its
 * limit is the healthy state of a busy queue, drawn in the accent colour; only past it is red.
 * @param {number} value
 * @param {number} max
 * @param {string} label
 */
export function meter(value, max, label) {
  const pct = max > 0 ? Math.min(100, (100 * value) / max) : value > 0 ? 100 : 0;
  const level = max > 0 && value > max ? 'over' : pct >= 100 ? 'full' : 'ok';
  return h(
    `div.meter.meter-${level}`,
    {
      role: 'meter',
      'aria-valuemin': 0,
      'aria-valuemax': max,
      'aria-valuenow': value,
      'aria-label': label,
      title: `${value} of ${max}`,
    },
    h('span.fill', { style: { width: `${pct}%` } }),
  );
}

/**
 * A round tick step (1, 2, 5 × 10^k) giving at most five intervals up to v, and the axis maximum.
 * @param {number} v
 * @returns {{ max: number, step: number }}
 */
function niceScale(v) {
  if (v <= 0) return { max: 1, step: 0.25 };
  v *= 1.08; // headroom: the tallest bar never touches the top
  const raw = v / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  return { max: Math.ceil(v / step) * step, step };
}

/**
 * @param {number} unixSeconds
 * @param {number} spanSeconds
 */
function timeLabel(unixSeconds, spanSeconds) {
  const d = new Date(unixSeconds * 1000);
  if (spanSeconds > 2 * 86400) return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  /** @type {Intl.DateTimeFormatOptions} */
  const opts =
    spanSeconds > 600
      ? { hour: '2-digit', minute: '2-digit' }
      : { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  return d.toLocaleTimeString(undefined, opts);
}

/** @typedef {{ top: number, right: number, bottom: number, left: number }} Margin */

/**
 * @param {number} width
 * @param {number} height
 * @param {Margin} margin
 * @param {{ max: number, step: number }} scale
 * @param {string} label
 */
function frame(width, height, margin, scale, label) {
  const svg = h('svg.chart', {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': label,
  });
  const plotH = height - margin.top - margin.bottom;
  for (let v = 0; v <= scale.max + scale.step / 2; v += scale.step) {
    const y = margin.top + plotH - (plotH * v) / scale.max;
    svg.append(h('line.grid', { x1: margin.left, x2: width - margin.right, y1: y, y2: y }));
    svg.append(
      h(
        'text.tick',
        { x: margin.left - 6, y: y + 4, 'text-anchor': 'end' },
        Number.isInteger(v) ? fmtNum(v) : v.toFixed(1),
      ),
    );
  }
  return svg;
}

/**
 * Time labels along the x axis, evenly spread and never closer than a label's width.
 * @param {Element} svg
 * @param {{ start: number, bucketSeconds: number, n: number, x: (i: number) => number, y: number, width: number }} axis
 */
function xTicks(svg, { start, bucketSeconds, n, x, y, width }) {
  const span = n * bucketSeconds;
  const minGap = 110;
  const count = Math.max(2, Math.min(7, n, Math.floor(width / minGap)));
  /** @type {number[]} */
  const kept = [];
  for (let k = 0; k < count; k++) {
    const i = n <= 1 ? 0 : Math.round((k * (n - 1)) / (count - 1));
    if (kept.length && x(i) - x(kept.at(-1) ?? 0) < minGap) {
      // The last label (the newest time) wins over its neighbour, but not over the first.
      if (k === count - 1 && kept.length > 1) kept.pop();
      else continue;
    }
    if (!kept.includes(i)) kept.push(i);
  }
  kept.forEach((i, k) => {
    const anchor = k === 0 ? 'start' : k === kept.length - 1 ? 'end' : 'middle';
    svg.append(
      h('text.tick', { x: x(i), y, 'text-anchor': anchor }, timeLabel(start + i * bucketSeconds, span)),
    );
  });
}

/**
 * @typedef {object} ChartOptions
 * @property {number} width
 * @property {number} [height]
 * @property {number} start Unix seconds of the first bucket
 * @property {number} bucketSeconds
 * @property {{ label: string, cls?: string, values: number[] }[]} series all of the same length
 * @property {string} label
 */

/**
 * Stacked bars per time bucket.
 * @param {ChartOptions} options
 */
export function barChart({ width, height = 200, start, bucketSeconds, series, label }) {
  const margin = { top: 12, right: 12, bottom: 26, left: 48 };
  const n = series[0]?.values.length ?? 0;
  const totals = Array.from({ length: n }, (_, i) => series.reduce((s, x) => s + (x.values[i] ?? 0), 0));
  const scale = niceScale(Math.max(0, ...totals));
  const yMax = scale.max;
  const svg = frame(width, height, margin, scale, label);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const bw = plotW / Math.max(n, 1);
  const x = (/** @type {number} */ i) => margin.left + i * bw + bw / 2;
  for (let i = 0; i < n; i++) {
    if (!totals[i]) continue;
    const g = h('g.bar');
    let y0 = margin.top + plotH;
    for (const s of series) {
      const v = s.values[i];
      if (!v) continue;
      const barH = (plotH * v) / yMax;
      y0 -= barH;
      g.append(
        h(`rect.${s.cls}`, {
          x: margin.left + i * bw + bw * 0.1,
          y: y0,
          width: Math.max(1, bw * 0.8),
          height: barH,
        }),
      );
    }
    const when = timeLabel(start + i * bucketSeconds, n * bucketSeconds);
    g.append(
      h('title', {}, `${when}: ${series.map((s) => `${fmtNum(s.values[i] ?? 0)} ${s.label}`).join(', ')}`),
    );
    svg.append(g);
  }
  svg.append(
    h('line.axis', {
      x1: margin.left,
      x2: width - margin.right,
      y1: margin.top + plotH,
      y2: margin.top + plotH,
    }),
  );
  if (n > 0) xTicks(svg, { start, bucketSeconds, n, x, y: height - 8, width });
  return svg;
}

/**
 * One line per series (values per bucket), e.g. dispatch rate per model.
 * @param {ChartOptions} options
 */
export function lineChart({ width, height = 200, start, bucketSeconds, series, label }) {
  const margin = { top: 12, right: 12, bottom: 26, left: 48 };
  const n = series[0]?.values.length ?? 0;
  const scale = niceScale(Math.max(0, ...series.flatMap((s) => s.values)));
  const yMax = scale.max;
  const svg = frame(width, height, margin, scale, label);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const x = (/** @type {number} */ i) => margin.left + (n <= 1 ? 0 : (plotW * i) / (n - 1));
  const y = (/** @type {number} */ v) => margin.top + plotH - (plotH * v) / yMax;
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(h(`polyline.line.s${k % 8}`, { points }, h('title', {}, s.label)));
    const last = s.values.length - 1;
    if (last >= 0) svg.append(h(`circle.dot.s${k % 8}`, { cx: x(last), cy: y(s.values[last] ?? 0), r: 3 }));
  });
  svg.append(
    h('line.axis', {
      x1: margin.left,
      x2: width - margin.right,
      y1: margin.top + plotH,
      y2: margin.top + plotH,
    }),
  );
  if (n > 0) xTicks(svg, { start, bucketSeconds, n, x, y: height - 8, width });
  return svg;
}

/**
 * Width for a chart filling `container` (charts are redrawn on every refresh, so resizes follow).
 * @param {HTMLElement} container
 */
export function chartWidth(container, fallback = 720) {
  return Math.max(280, Math.floor(container.clientWidth || fallback));
}
