/**
 * What the operations page remembers of the sends in its window between two polls (issue 14): the
 * page is polled every 2 s per open tab, and reading every request finished in its 15-minute window
 * at each poll read their heap (a recent row's page is not all-visible, so no index-only scan
 * helps): 31,000 rows over 18,300 heap pages, 718 ms at load 15 (1,045 ms with 30,000 on bigdb).
 * With a memory, a poll reads only the rows finished since the previous one (less a margin) and the
 * ones in flight; rows finished before the margin are kept here, counted per model and second sent,
 * until they leave the window. Pure: the I/O is operations.ts's.
 *
 * The margin: a row's completed_at is its completing statement's start (now()), so a row that
 * commits after a poll could carry an earlier completed_at; rows finished within SETTLE_SECONDS of
 * a poll are read again by the next one, and kept only once they are older. A row requeued for a
 * retry after being kept stays counted (it was sent); the next attempt counts again when it is.
 */

/** Rows finished this long before a poll are kept; younger ones are read again by the next poll. */
export const SETTLE_SECONDS = 10;

/** Owners (scopes) remembered at most; the least recently polled is forgotten first. */
const MAX_SCOPES = 1000;

interface Scope {
  /** Rows finished before this instant (database time, ms) are counted in `seconds`. */
  throughMs: number;
  /** Per model: sends per epoch second (of started_at). */
  seconds: Map<string, Map<number, number>>;
  /** Polls of this scope run one at a time (two tabs must not keep the same rows twice). */
  turn: Promise<unknown>;
}

export class SendsMemory {
  private readonly scopes = new Map<string, Scope>();

  /**
   * Runs `poll` for the scope (an owner, or null for all) after the scope's previous poll, giving it
   * the instant from which rows must be read (null: none kept, read the whole window).
   */
  async poll<T>(owner: string | null, poll: (scope: ScopeView) => Promise<T>): Promise<T> {
    const key = owner === null ? '\u0000all' : `o:${owner}`;
    let scope = this.scopes.get(key);
    if (!scope) {
      scope = { throughMs: Number.NaN, seconds: new Map(), turn: Promise.resolve() };
      if (this.scopes.size >= MAX_SCOPES) this.scopes.delete(this.scopes.keys().next().value!);
    }
    this.scopes.delete(key);
    this.scopes.set(key, scope);
    const s = scope;
    const run = s.turn.then(() => poll(new ScopeView(s)));
    s.turn = run.catch(() => {});
    return run;
  }
}

/** One poll's access to its scope. */
export class ScopeView {
  constructor(private readonly scope: Scope) {}

  /** Rows finished from this instant on must be read (null: read the whole window). */
  get fromMs(): number | null {
    return Number.isNaN(this.scope.throughMs) ? null : this.scope.throughMs;
  }

  /**
   * Keeps rows read this poll that finished before `throughMs` (per model and second sent), forgets
   * the seconds before the window (`sinceMs`) and returns what is kept, per model and second.
   */
  keep(
    settled: { model: string; second: number; n: number }[],
    throughMs: number,
    sinceMs: number,
  ): Map<string, Map<number, number>> {
    for (const r of settled) {
      let perSecond = this.scope.seconds.get(r.model);
      if (!perSecond) {
        perSecond = new Map();
        this.scope.seconds.set(r.model, perSecond);
      }
      perSecond.set(r.second, (perSecond.get(r.second) ?? 0) + r.n);
    }
    const first = Math.floor(sinceMs / 1000);
    for (const [model, perSecond] of this.scope.seconds) {
      for (const second of perSecond.keys()) if (second < first) perSecond.delete(second);
      if (perSecond.size === 0) this.scope.seconds.delete(model);
    }
    this.scope.throughMs = throughMs;
    return this.scope.seconds;
  }
}
