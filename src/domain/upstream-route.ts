import { createHash } from 'node:crypto';

/**
 * Where a request goes, decided when its batch is created and recorded with every request
 * (requests.route_id → upstream_routes): an upstream and the credential a sender needs. A daemon
 * claims only the routes it can send exactly as recorded (src/daemon/upstreams.ts), so a request
 * never goes to another upstream, or with another key, because of which daemon happened to claim it.
 *
 * `upstream` is a base URL ("https://api.openai.com"), or a name for an upstream whose address is
 * local to each process: "mock" is the built-in mock of `--upstream mock` (its port differs in every
 * process, yet every daemon with a built-in mock can send there).
 *
 * The credential vocabulary (upstream_routes.credential; never a key itself):
 *
 *   none                  sent without a key, by a daemon configured for this upstream without one
 *   key:sha256:<16 hex>   sent with a key the daemons hold, by a daemon configured for this upstream
 *                         with the key of this fingerprint (keyFingerprint)
 *   template              sent with the key in the template row (request_templates.api_key, possibly
 *                         empty): self-contained, any daemon can send it (the library's templates)
 *   daemon                rows created before routes were recorded (migration 0010): sent with the
 *                         key of any daemon configured for this upstream, as they were then
 *   template-sealed:<kid> sent with the key in the template row, stored encrypted with the
 *                         key-encryption key whose id is <kid> (src/domain/key-encryption.ts): only
 *                         a daemon holding that secret claims these rows; any other leaves them
 *                         pending (the batch says no daemon serves its upstream), none fails them
 *
 * A new kind is a new word here, with its rule in src/daemon/upstreams.ts. Credentials match `CREDENTIAL_PATTERN` (the table's CHECK says the same).
 */
export interface RouteSpec {
  /** Base URL without credentials or trailing slash, or a local upstream's name ("mock"). */
  upstream: string;
  credential: Credential;
}

/** A route as stored: its id in upstream_routes. */
export interface StoredRoute extends RouteSpec {
  id: number;
}

export type Credential =
  | 'none'
  | 'template'
  | 'daemon'
  | `key:sha256:${string}`
  | `template-sealed:${string}`;

export const NO_KEY = 'none' as const;
export const TEMPLATE_KEY = 'template' as const;
export const LEGACY_DAEMON_KEY = 'daemon' as const;

/** The template's own key, sealed by the key-encryption key `kid` (see the vocabulary above). */
export function sealedTemplateKey(kid: string): Credential {
  return `template-sealed:${kid}`;
}

/** The key-encryption key id a credential needs, or null. */
export function credentialSealedBy(credential: string): string | null {
  return credential.startsWith('template-sealed:') ? credential.slice('template-sealed:'.length) : null;
}

/** The name the built-in mock upstream is recorded under. */
export const MOCK_UPSTREAM = 'mock';

/** A credential word: lower-case kind, optionally ":" and a value of safe characters. */
export const CREDENTIAL_PATTERN = /^[a-z][a-z0-9-]*(:[A-Za-z0-9:_.-]+)?$/;

/**
 * Credentials every daemon can send, whatever its configuration: the route names where to send, and
 * the row holds what to send with.
 */
export const SELF_CONTAINED_CREDENTIALS: readonly Credential[] = [TEMPLATE_KEY];

/**
 * "sha256:" and the first 16 hex digits of the key's SHA-256: names a key in rows, logs and the API
 * without revealing it (64 bits: distinct keys of one deployment do not collide in practice).
 */
export function keyFingerprint(key: string): `sha256:${string}` {
  return `sha256:${createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 16)}`;
}

/** The credential of a configured upstream: its key's fingerprint, or none without a key. */
export function credentialForKey(key: string | undefined | null): Credential {
  return key ? `key:${keyFingerprint(key)}` : NO_KEY;
}

/** The key fingerprint a credential names, or null. */
export function credentialFingerprint(credential: string): string | null {
  return credential.startsWith('key:') ? credential.slice(4) : null;
}

/** One line for people: what a sender needs. */
export function describeCredential(credential: string): string {
  const fp = credentialFingerprint(credential);
  if (fp) return `key ${fp}`;
  if (credential === NO_KEY) return 'no key';
  if (credential === TEMPLATE_KEY) return "the template's own key";
  if (credential === LEGACY_DAEMON_KEY) return "any daemon's key for it";
  const sealedBy = credentialSealedBy(credential);
  if (sealedBy) return `the template's own key, sealed by key-encryption key ${sealedBy}`;
  return credential;
}

/** An upstream for messages and the API: a URL's user and password (if someone put a key there) are dropped. */
export function displayUpstream(upstream: string): string {
  if (!/^https?:\/\//i.test(upstream)) return upstream;
  try {
    const u = new URL(upstream);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid URL)';
  }
}

/** "upstream (credential)", safe to show anywhere. */
export function describeRoute(route: RouteSpec): string {
  return `${displayUpstream(route.upstream)} (${describeCredential(route.credential)})`;
}

/** "https://api.example.com/v1/" → "https://api.example.com": templates add the /v1/... path. */
export function normalizeBaseUrl(url: string): string {
  let u = url.trim().replace(/\/+$/, '');
  if (u.endsWith('/v1')) u = u.slice(0, -3).replace(/\/+$/, '');
  return u;
}

/** A route's upstream names a URL (else a local upstream such as "mock"). */
export function isUrlUpstream(upstream: string): boolean {
  return /^https?:\/\//i.test(upstream);
}

/** A configured upstream, as a router gives it (src/dispatch/config.ts UpstreamRoute). */
export interface ConfiguredUpstream {
  endpoint?: string;
  apiKey?: string;
  name?: string;
}

/** The upstream a configured route is recorded under: its name, else its normalised base URL. */
export function configuredUpstream(route: ConfiguredUpstream): string | undefined {
  if (route.name) return route.name;
  return route.endpoint ? normalizeBaseUrl(route.endpoint) : undefined;
}

/**
 * The route of one template when its batch is created: the creating process's route for the model
 * (its upstream, and its key's fingerprint or none; a route without a key leaves a template's own key
 * in use), else the template's own endpoint and key.
 */
export function routeOfTemplate(
  routed: ConfiguredUpstream | undefined,
  template: { endpoint: string; hasKey: boolean; sealedBy?: string | null },
): RouteSpec {
  const upstream = routed ? configuredUpstream(routed) : undefined;
  const own = template.sealedBy ? sealedTemplateKey(template.sealedBy) : TEMPLATE_KEY;
  if (routed && upstream) {
    if (routed.apiKey) return { upstream, credential: credentialForKey(routed.apiKey) };
    return { upstream, credential: template.hasKey ? own : NO_KEY };
  }
  return { upstream: template.endpoint, credential: own };
}

/** Gives a model's configured upstream (src/dispatch/config.ts UpstreamRouter has this shape). */
export interface ModelRouter {
  route(model: string): ConfiguredUpstream | undefined;
}

/** The API's batch error for requests that wait because no live daemon can send them. */
export const NO_DAEMON_FOR_UPSTREAM = 'no_daemon_for_upstream';

/** Why a batch's requests on one upstream wait, and what to do about it (no key, only its fingerprint). */
export function waitingMessage(u: {
  upstream: string;
  credential: string;
  keyFingerprint: string | null;
  models: string[];
}): string {
  const needs =
    u.credential === 'key'
      ? ` with the key of fingerprint ${u.keyFingerprint}`
      : u.credential === NO_KEY
        ? ' without a key'
        : '';
  const models = u.models.map((m) => JSON.stringify(m)).join(', ');
  return (
    `No running daemon sends to ${displayUpstream(u.upstream)}${needs}: the requests for ${models} wait. ` +
    `Start a daemon with that upstream${u.credential === 'key' ? ' and key' : ''}, or move the batch to another upstream (fusillade reroute).`
  );
}
