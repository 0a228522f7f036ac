// @ts-check
// A tiny element builder and the formatting the pages share.
import domain from './domain.js';

/** @typedef {import('./app-types.d.ts').Children} Children */
/** @typedef {Record<string, unknown>} Attrs */

/**
 * h('a.btn', { href, onclick, 'aria-label': ... }, children...) — attributes starting with "on"
 * become listeners, `class`/`dataset`/`style` are handled, null/false children are skipped.
 * @param {string} tag
 * @param {Attrs | null} [attrs]
 * @param {Children[]} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const [name = 'div', ...classes] = tag.split('.');
  const svg = SVG_TAGS.has(name);
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', name)
    : document.createElement(name);
  if (classes.length) el.setAttribute('class', classes.join(' '));
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function')
      el.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
    else if (k === 'class') el.setAttribute('class', [el.getAttribute('class'), v].filter(Boolean).join(' '));
    else if (k === 'dataset') Object.assign(/** @type {HTMLElement} */ (el).dataset, v);
    else if (k === 'style')
      Object.assign(/** @type {HTMLElement} */ (el).style, v); // CSSOM: allowed by the page's CSP
    else if (k === 'value' && !svg) /** @type {HTMLInputElement} */ (el).value = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  // SVG elements are typed as HTMLElement for the callers' convenience: they use only Element's API.
  return /** @type {HTMLElement} */ (el);
}

/**
 * @param {Element} el
 * @param {Children[]} children
 */
function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_TAGS = new Set([
  'svg',
  'g',
  'rect',
  'line',
  'path',
  'text',
  'title',
  'polyline',
  'circle',
  'defs',
  'pattern',
]);

/**
 * Replaces el's children, keeping keyboard focus on the element with the same data-key.
 * @param {Element} el
 * @param {Children[]} children
 */
export function replaceChildren(el, ...children) {
  const active = /** @type {HTMLElement | null} */ (document.activeElement);
  const key = active && el.contains(active) ? active.dataset?.key : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) /** @type {HTMLElement | null} */ (el.querySelector(`[data-key="${CSS.escape(key)}"]`))?.focus();
}

const numberFormat = new Intl.NumberFormat('en');
/** @param {number | null | undefined} n */
export const fmtNum = (n) => (n === null || n === undefined ? '—' : numberFormat.format(n));

/**
 * @param {number} part
 * @param {number} total
 */
export function fmtPercent(part, total) {
  if (!total) return '0%';
  const p = (100 * part) / total;
  return `${p >= 10 || p === 0 ? Math.floor(p) : p.toFixed(1)}%`;
}

/**
 * 95 → "1m 35s", 7300 → "2h 1m".
 * @param {number | null | undefined} seconds
 */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export const nowSeconds = () => Date.now() / 1000;

/** @param {number | null | undefined} unixSeconds */
export function fmtAgo(unixSeconds) {
  if (!unixSeconds) return '—';
  const d = nowSeconds() - unixSeconds;
  return d < 2 ? 'just now' : `${fmtDuration(d)} ago`;
}

/** @param {number | null | undefined} unixSeconds */
export function fmtTime(unixSeconds) {
  if (!unixSeconds) return '—';
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

/**
 * The one rate format: requests per second ("0.4/s", "3.0/s", "43/s"); "—" when there is none.
 * @param {number | null | undefined} perSecond
 */
export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined || !Number.isFinite(perSecond)) return '—';
  if (perSecond === 0) return '0/s';
  if (perSecond < 0.1) return `${perSecond.toFixed(2)}/s`;
  return `${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond)}/s`;
}

/** @param {number | null | undefined} ms */
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/**
 * "batch_0123abcd…" → "batch_0123abcd" (enough to recognise; the full id is in the title).
 * @param {string} id
 */
export const shortId = (id) => (id.length > 20 ? `${id.slice(0, 18)}…` : id);

/** Statuses of a batch that has not ended (src/domain's list, served as /assets/domain.js). */
export const LIVE_STATUSES = new Set(/** @type {readonly string[]} */ (domain.LIVE_BATCH_STATUSES));

/** @param {string} status */
export function statusBadge(status) {
  return h(`span.badge.status-${status}`, {}, status.replace('_', ' '));
}

/**
 * Pretty-prints JSON text; anything else is shown as it is.
 * @param {string | null | undefined} text
 */
export function prettyJson(text) {
  if (text === null || text === undefined) return '';
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/**
 * @template {unknown[]} A
 * @param {(...args: A) => void} fn
 * @param {number} ms
 * @returns {(...args: A) => void}
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
