import type { UpstreamRoute, UpstreamRouter } from '../dispatch/config.js';
import {
  configuredUpstream,
  credentialForKey,
  isUrlUpstream,
  LEGACY_DAEMON_KEY,
  NO_KEY,
  type RouteSpec,
  SELF_CONTAINED_CREDENTIALS,
  type StoredRoute,
  sealedTemplateKey,
  TEMPLATE_KEY,
} from '../domain/upstream-route.js';

/** How a daemon sends a route's requests. */
export interface SendTarget {
  /** The base URL the request's path is appended to. */
  url: string;
  /** The key sent as `Authorization: Bearer`: a configured key, none, or (null) the row's own. */
  apiKey: string | null;
}

/**
 * A daemon's upstreams: which recorded routes it can send exactly as recorded, and how. The rules,
 * per credential (src/domain/upstream-route.ts):
 *
 *   template        any daemon: to the route's URL (a named upstream: the daemon's own of that name)
 *                   with the row's key
 *   template-sealed:<kid>  as template, by a daemon holding key-encryption key <kid> (it opens the
 *                   row's key at dispatch); no other daemon claims these rows
 *   none, key:…     a daemon whose router has this upstream with no key / a key of this fingerprint
 *                   (among routes(), or route(model) for the model at hand), with that key
 *   daemon          (backfilled rows) a daemon whose router has this upstream, with its key: the one
 *                   route(model) gives when it is this upstream, else any of it
 *
 * Anything else (an unknown credential, an upstream the daemon does not have) is not served: the
 * rows stay pending for a daemon that can send them, and the server says no daemon serves them.
 */
export class DaemonUpstreams {
  private readonly configured: UpstreamRoute[];
  private readonly bySpec = new Map<string, UpstreamRoute>();
  private readonly byName = new Map<string, string>();
  /** Resolved (route id, model) pairs; a route id's rules never change, so entries stay valid. */
  private readonly resolved = new Map<number, Map<string, SendTarget | null>>();

  /** The template-sealed credentials this daemon can open (its key-encryption key's). */
  private readonly sealed: ReadonlySet<string>;

  constructor(
    private readonly router: UpstreamRouter | undefined,
    /** Ids of the key-encryption keys this daemon holds (src/domain/key-encryption.ts). */
    keyEncryptionKeyIds: readonly string[] = [],
  ) {
    this.sealed = new Set(keyEncryptionKeyIds.map(sealedTemplateKey));
    this.configured = (router?.routes?.() ?? []).filter((r) => r.endpoint && configuredUpstream(r));
    for (const r of this.configured) this.remember(r);
  }

  private remember(r: UpstreamRoute): void {
    const upstream = configuredUpstream(r)!;
    const key = specKey({ upstream, credential: credentialForKey(r.apiKey) });
    if (!this.bySpec.has(key)) this.bySpec.set(key, r);
    if (r.name && !this.byName.has(r.name)) this.byName.set(r.name, r.endpoint!);
  }

  /**
   * The routes this daemon serves besides the self-contained credentials: its router's routes(), and
   * any route(model) gave since (a router without routes()).
   */
  declared(): RouteSpec[] {
    return [...this.bySpec.keys()].map((key) => {
      const [upstream, credential] = key.split('\u0000') as [string, RouteSpec['credential']];
      return { upstream, credential };
    });
  }

  /** Every key this daemon's routes send (for redaction from stored answers; never stored or logged). */
  keys(): string[] {
    const out: string[] = [];
    for (const r of this.bySpec.values()) if (r.apiKey) out.push(r.apiKey);
    return out;
  }

  /** Credentials this daemon sends to any upstream it can address. */
  get anyUpstreamCredentials(): readonly string[] {
    return [...SELF_CONTAINED_CREDENTIALS, ...this.sealed];
  }

  /** How to send `model`'s rows of this route, or null when this daemon cannot send them exactly. */
  resolve(route: StoredRoute, model: string): SendTarget | null {
    let perModel = this.resolved.get(route.id);
    if (!perModel) {
      perModel = new Map();
      this.resolved.set(route.id, perModel);
    }
    let target = perModel.get(model);
    if (target === undefined) {
      target = this.decide(route, model);
      perModel.set(model, target);
    }
    return target;
  }

  /** A resolved pair (after resolve()); undefined if never resolved. */
  target(routeId: number, model: string): SendTarget | null | undefined {
    return this.resolved.get(routeId)?.get(model);
  }

  private decide(route: StoredRoute, model: string): SendTarget | null {
    const routed = this.router?.route(model);
    const routedUpstream = routed?.endpoint ? configuredUpstream(routed) : undefined;
    if (routed && routedUpstream === route.upstream) this.remember(routed);
    if (route.credential === TEMPLATE_KEY || this.sealed.has(route.credential)) {
      const url = isUrlUpstream(route.upstream) ? route.upstream : this.byName.get(route.upstream);
      return url ? { url, apiKey: null } : null;
    }
    if (route.credential === LEGACY_DAEMON_KEY) {
      const r =
        routed && routedUpstream === route.upstream
          ? routed
          : this.configured.find((c) => configuredUpstream(c) === route.upstream);
      return r ? { url: r.endpoint!, apiKey: r.apiKey ?? '' } : null;
    }
    if (route.credential === NO_KEY || route.credential.startsWith('key:')) {
      const r = this.bySpec.get(specKey(route));
      return r ? { url: r.endpoint!, apiKey: r.apiKey ?? '' } : null;
    }
    return null;
  }
}

function specKey(spec: RouteSpec | StoredRoute): string {
  return `${spec.upstream}\u0000${spec.credential}`;
}
