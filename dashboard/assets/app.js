// The dashboard shell: hash routes, sign-in state, live polling and notices.
import { session, whoAmI } from './api.js';
import * as batchPage from './pages/batch.js';
import * as batchesPage from './pages/batches.js';
import * as operationsPage from './pages/operations.js';
import * as signInPage from './pages/signin.js';

const ROUTES = [
  { pattern: /^#\/batches\/([^/?]+)$/, page: batchPage, nav: 'batches' },
  { pattern: /^#\/operations$/, page: operationsPage, nav: 'operations' },
  { pattern: /^#\/(batches)?$/, page: batchesPage, nav: 'batches' },
];

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const toastEl = document.getElementById('toast');
const liveDot = document.getElementById('live-dot');
let teardown = [];
let toastTimer;

/** What a page gets: polling tied to its lifetime, notices, navigation. */
const app = {
  /** Calls fn now and then every `ms` after each run ends; paused while the tab is hidden. */
  poll(fn, ms) {
    let stopped = false;
    let timer;
    let failing = false;
    const run = async () => {
      if (stopped) return;
      if (!document.hidden) {
        try {
          await fn();
          if (failing) app.toast('Reconnected.');
          failing = false;
          liveDot.classList.remove('error');
        } catch (err) {
          if (stopped || err.name === 'AbortError') return;
          liveDot.classList.add('error');
          if (!failing) app.toast(err.message, 'error');
          failing = true;
        }
      }
      if (!stopped) timer = setTimeout(run, ms);
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
};

function leavePage() {
  for (const fn of teardown) fn();
  teardown = [];
  main.replaceChildren();
}

async function route() {
  leavePage();
  if (!session.key) {
    topbar.hidden = true;
    document.title = 'Sign in · fusillade';
    signInPage.mount(main, {
      async onSignIn(key) {
        const owner = await whoAmI(key);
        session.signIn(key);
        sessionStorage.setItem('fusillade.owner', owner);
        if (!ROUTES.some((r) => r.pattern.test(location.hash))) location.hash = '#/batches';
        route();
      },
    });
    return;
  }
  topbar.hidden = false;
  document.getElementById('owner').textContent = sessionStorage.getItem('fusillade.owner') ?? '';
  const hash = location.hash || '#/batches';
  const match = ROUTES.map((r) => ({ r, m: hash.match(r.pattern) })).find((x) => x.m);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (match && a.dataset.nav === match.r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!match) {
    document.title = 'Not found · fusillade';
    main.append(
      Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No such page.' }),
    );
    return;
  }
  match.r.page.mount(
    main,
    app,
    ...match.m.slice(1).map((p) => (p === undefined ? p : decodeURIComponent(p))),
  );
  // Move focus to the new page for keyboard and screen-reader users, without scrolling jumps.
  main.focus({ preventScroll: true });
}

document.getElementById('signout').addEventListener('click', () => session.signOut());
window.addEventListener('fusillade:signed-out', () => {
  sessionStorage.removeItem('fusillade.owner');
  route();
});
window.addEventListener('hashchange', route);

// A remembered key: look up its owner again (it may have been revoked since).
if (session.key && !sessionStorage.getItem('fusillade.owner')) {
  whoAmI(session.key)
    .then((owner) => sessionStorage.setItem('fusillade.owner', owner))
    .catch(() => session.signOut())
    .finally(route);
} else {
  route();
}
