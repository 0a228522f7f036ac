// A tiny element builder and the formatting the pages share.

/**
 * h('a.btn', { href, onclick, 'aria-label': ... }, children...) — attributes starting with "on"
 * become listeners, `class`/`dataset`/`style` are handled, null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split('.');
  const svg = SVG_TAGS.has(name);
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', name)
    : document.createElement(name);
  if (classes.length) el.setAttribute('class', classes.join(' '));
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', [el.getAttribute('class'), v].filter(Boolean).join(' '));
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style')
      Object.assign(el.style, v); // CSSOM: allowed by the page's CSP
    else if (k === 'value' && !svg) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
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

/** Replaces el's children, keeping keyboard focus on the element with the same data-key. */
export function replaceChildren(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset?.key : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) el.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

const numberFormat = new Intl.NumberFormat('en');
export const fmtNum = (n) => (n === null || n === undefined ? '—' : numberFormat.format(n));

export function fmtPercent(part, total) {
  if (!total) return '0%';
  const p = (100 * part) / total;
  return `${p >= 10 || p === 0 ? Math.floor(p) : p.toFixed(1)}%`;
}

/** 95 → "1m 35s", 7300 → "2h 1m". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export const nowSeconds = () => Date.now() / 1000;

export function fmtAgo(unixSeconds) {
  if (!unixSeconds) return '—';
  const d = nowSeconds() - unixSeconds;
  return d < 2 ? 'just now' : `${fmtDuration(d)} ago`;
}

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

export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return '—';
  if (perSecond === 0) return '0/s';
  if (perSecond < 1) return `${(perSecond * 60).toFixed(perSecond * 60 < 10 ? 1 : 0)}/min`;
  return `${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond)}/s`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** "batch_0123abcd…" → "batch_0123abcd" (enough to recognise; the full id is in the title). */
export const shortId = (id) => (id.length > 20 ? `${id.slice(0, 18)}…` : id);

export const LIVE_STATUSES = new Set(['in_progress', 'finalizing', 'cancelling']);

export function statusBadge(status) {
  return h(`span.badge.status-${status}`, {}, status.replace('_', ' '));
}

/** Pretty-prints JSON text; anything else is shown as it is. */
export function prettyJson(text) {
  if (text === null || text === undefined) return '';
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
