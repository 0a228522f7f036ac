// @ts-check
// The dashboard shell: hash routes with their query (the view's state), sign-in state, live
// polling with its freshness and outage banner, notices.
import { ApiError, session, whoAmI } from './api.js';
import { fmtDuration } from './dom.js';
import * as batchPage from './pages/batch.js';
import * as batchesPage from './pages/batches.js';
import * as operationsPage from './pages/operations.js';
import * as signInPage from './pages/signin.js';
import * as webhooksPage from './pages/webhooks.js';

/** @typedef {import('./app-types.d.ts').App} App */
/** @typedef {import('./app-types.d.ts').PageView} PageView */
/** @typedef {import('./app-types.d.ts').Mount} Mount */

/** @type {{ pattern: RegExp, mount: Mount, nav: string }[]} */
const ROUTES = [
  { pattern: /^#\/batches\/([^/?]+)$/, mount: batchPage.mount, nav: 'batches' },
  { pattern: /^#\/operations$/, mount: operationsPage.mount, nav: 'operations' },
  { pattern: /^#\/webhooks$/, mount: webhooksPage.mount, nav: 'webhooks' },
  { pattern: /^#\/(?:batches)?$/, mount: batchesPage.mount, nav: 'batches' },
];

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
const byId = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html lacks #${id}`);
  return el;
};
const main = byId('main');
const topbar = byId('topbar');
const toastEl = byId('toast');
const liveDot = byId('live-dot');
const freshness = byId('freshness');
const outage = byId('outage');

/** @type {(() => void)[]} */
let teardown = [];
/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;
/** The mounted page: its path (the hash without its query) and how it follows a new query. */
/** @type {{ path: string, view: PageView | undefined } | null} */
let current = null;
let query = new URLSearchParams();

// Freshness: when the page's data last arrived, and since when polling fails (null: it does not).
/** @type {number | null} */
let updatedAt = null;
/** @type {number | null} */
let failingSince = null;
let failureMessage = '';

/** @param {number} t */
const clock = (t) => new Date(t).toLocaleTimeString(undefined, { hour12: false });

/** @param {number} t */
function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 60 ? `${s} s ago` : `${fmtDuration(s)} ago`;
}

/** The top bar's "updated N s ago" and the outage banner, redrawn every second and on each poll. */
function showFreshness() {
  freshness.textContent = updatedAt === null ? 'loading…' : `updated ${ago(updatedAt)}`;
  freshness.classList.toggle('stale', failingSince !== null);
  liveDot.classList.toggle('error', failingSince !== null);
  if (failingSince === null) {
    outage.hidden = true;
    return;
  }
  outage.hidden = false;
  outage.textContent =
    `${failureMessage} Retrying since ${clock(failingSince)}. ` +
    (updatedAt === null
      ? 'Nothing has loaded yet.'
      : `The data shown is from ${clock(updatedAt)} (${ago(updatedAt)}).`);
}
setInterval(showFreshness, 1000);

/** @type {App} */
const app = {
  poll(fn, ms) {
    let stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const run = async () => {
      if (stopped) return;
      // A hidden tab keeps polling, less often: coming back shows how fresh the data is.
      try {
        await fn();
        if (stopped) return;
        if (failingSince !== null) app.toast('Reconnected.');
        failingSince = null;
        updatedAt = Date.now();
      } catch (err) {
        if (stopped || (err instanceof Error && err.name === 'AbortError')) return;
        failingSince ??= Date.now();
        failureMessage = err instanceof Error ? err.message : String(err);
      }
      showFreshness();
      if (!stopped) timer = setTimeout(run, document.hidden ? ms * 4 : ms);
    };
    run();
    teardown.push(() => {
      stopped = true;
      clearTimeout(timer);
    });
  },
  onLeave(fn) {
    teardown.push(fn);
  },
  toast(message, kind = 'info') {
    toastEl.textContent = message;
    toastEl.className = `toast show ${kind}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      toastEl.className = 'toast';
    }, 4000);
  },
  navigate(hash) {
    location.hash = hash;
  },
  get query() {
    return new URLSearchParams(query);
  },
  setQuery(next, { replace = false } = {}) {
    if (!current) return;
    const text = next.toString();
    const hash = `${current.path}${text ? `?${text}` : ''}`;
    if (hash === location.hash) return;
    if (!replace) {
      location.hash = hash; // hashchange hands the query to the page
      return;
    }
    history.replaceState(history.state, '', hash);
    query = new URLSearchParams(text);
    current.view?.update?.(new URLSearchParams(text));
  },
};

/** The hash's path ("#/batches/x") and its query. */
function parseHash() {
  const raw = location.hash || '#/batches';
  const i = raw.indexOf('?');
  return {
    path: i < 0 ? raw : raw.slice(0, i),
    query: new URLSearchParams(i < 0 ? '' : raw.slice(i + 1)),
  };
}

function leavePage() {
  for (const fn of teardown) fn();
  teardown = [];
  current = null;
  updatedAt = null;
  failingSince = null;
  main.replaceChildren();
  showFreshness();
}

/** Follows the hash: the same page takes a new query in place; another path mounts its page. */
function onHashChange() {
  const next = parseHash();
  if (session.key && current && current.path === next.path && current.view?.update) {
    query = next.query;
    current.view.update(new URLSearchParams(next.query));
    return;
  }
  route();
}

function route() {
  leavePage();
  if (!session.key) {
    topbar.hidden = true;
    document.title = 'Sign in · fusillade';
    signInPage.mount(main, {
      /** @param {string} key */
      async onSignIn(key) {
        const owner = await whoAmI(key);
        session.signIn(key);
        sessionStorage.setItem('fusillade.owner', owner);
        if (!ROUTES.some((r) => r.pattern.test(parseHash().path))) location.hash = '#/batches';
        route();
      },
    });
    return;
  }
  topbar.hidden = false;
  byId('owner').textContent = sessionStorage.getItem('fusillade.owner') ?? '';
  const { path, query: q } = parseHash();
  query = q;
  const match = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (match && a instanceof HTMLElement && a.dataset.nav === match.r.nav)
      a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!match?.m) {
    document.title = 'Not found · fusillade';
    main.append(
      Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No such page.' }),
    );
    return;
  }
  const params = match.m.slice(1).map((p) => (p === undefined ? '' : decodeURIComponent(p)));
  current = { path, view: undefined };
  current.view = match.r.mount(main, app, params, new URLSearchParams(q)) ?? undefined;
  // Move focus to the new page for keyboard and screen-reader users, without scrolling jumps.
  main.focus({ preventScroll: true });
}

// The sticky table headers sit under the top bar, whose height changes as it wraps on phones.
new ResizeObserver(() => {
  document.documentElement.style.setProperty('--topbar-h', `${topbar.offsetHeight}px`);
}).observe(topbar);

byId('signout').addEventListener('click', () => session.signOut());
window.addEventListener('fusillade:signed-out', () => {
  sessionStorage.removeItem('fusillade.owner');
  route();
});
window.addEventListener('hashchange', onHashChange);

// A remembered key: look up its owner again (it may have been revoked since).
if (session.key && !sessionStorage.getItem('fusillade.owner')) {
  whoAmI(session.key)
    .then((owner) => sessionStorage.setItem('fusillade.owner', owner))
    .catch((err) => {
      if (err instanceof ApiError && err.status === 401) session.signOut();
    })
    .finally(route);
} else {
  route();
}
