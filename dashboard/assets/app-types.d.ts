// Types shared by the dashboard's modules (type-only: never served, checked by `npm run typecheck`).

/** What h() and replaceChildren() take as children: nodes, text, nothing, or lists of them. */
export type Children = Node | string | number | null | undefined | false | Children[];

/** What the shell gives a page: polling tied to its lifetime, notices, dialogs and its URL state. */
export interface App {
  /** Calls fn now and then `ms` after each run ends; failures show the outage banner. */
  poll(fn: () => Promise<void>, ms: number): void;
  /** Runs fn when the page is left. */
  onLeave(fn: () => void): void;
  toast(message: string, kind?: 'info' | 'error'): void;
  navigate(hash: string): void;
  /** The view's state from the URL: `#/path?query`. */
  readonly query: URLSearchParams;
  /** Puts the view's state in the URL: a new history entry (Back undoes it), or in place. */
  setQuery(query: URLSearchParams, options?: { replace?: boolean }): void;
}

/** What a page's mount returns: how it follows a new query on the same path (Back/Forward). */
export interface PageView {
  update?(query: URLSearchParams): void;
}

export type Mount = (
  main: HTMLElement,
  app: App,
  params: string[],
  query: URLSearchParams,
) => PageView | undefined;
