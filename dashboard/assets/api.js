// @ts-check
// Talks to this server only: the /v1 Batch API and the dashboard's /api/dashboard routes, with
// the API key the user signed in with (kept in localStorage, sent as a Bearer token).

/** @typedef {import('../../src/server/dashboard-wire.js').ErrorEnvelope} ErrorEnvelope */
/** @typedef {import('../../src/server/dashboard-wire.js').Me} Me */

const STORAGE_KEY = 'fusillade.apiKey';
/** A call still unanswered after this long counts as failed, so a hung server shows as an outage. */
const TIMEOUT_MS = 10_000;

export const session = {
  /** @returns {string | null} */
  get key() {
    return localStorage.getItem(STORAGE_KEY);
  },
  /** @param {string} key */
  signIn(key) {
    localStorage.setItem(STORAGE_KEY, key);
  },
  signOut() {
    localStorage.removeItem(STORAGE_KEY);
    window.dispatchEvent(new Event('fusillade:signed-out'));
  },
};

export class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status HTTP status; 0 when the server could not be reached.
   * @param {string | null | undefined} code the error envelope's code
   */
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code ?? null;
  }
}

/** @typedef {{ method?: string, body?: unknown, signal?: AbortSignal }} SendOptions */

/**
 * @param {string} path
 * @param {SendOptions} [options]
 * @returns {Promise<Response>}
 */
async function send(path, { method = 'GET', body, signal } = {}) {
  /** @type {Record<string, string>} */
  const headers = { authorization: `Bearer ${session.key ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const timeout = AbortSignal.timeout(TIMEOUT_MS);
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(
      timeout.aborted ? 'The server did not answer in time.' : 'The server cannot be reached.',
      0,
      'network_error',
    );
  }
  if (res.status === 401) {
    session.signOut();
    throw new ApiError('Your API key was not accepted. Sign in again.', 401, 'invalid_api_key');
  }
  return res;
}

/**
 * @param {Response} res
 * @param {string} fallback
 */
async function errorOf(res, fallback) {
  /** @type {ErrorEnvelope | null} */
  const data = await res.json().catch(() => null);
  return new ApiError(data?.error?.message ?? fallback, res.status, data?.error?.code);
}

/**
 * JSON request; non-2xx answers become an ApiError with the server's message. The caller names
 * the answer's wire type with a JSDoc cast, e.g. `@type {BatchProgress}`.
 * @template T
 * @param {string} path
 * @param {SendOptions} [options]
 * @returns {Promise<T>}
 */
export async function api(path, options) {
  const res = await send(path, options);
  if (!res.ok) throw await errorOf(res, `${res.status} ${res.statusText}`);
  return /** @type {T} */ (await res.json());
}

/**
 * Checks a key without storing it: the owner's name, or an ApiError.
 * @param {string} key
 * @returns {Promise<string>}
 */
export async function whoAmI(key) {
  const res = await fetch('/api/dashboard/me', { headers: { authorization: `Bearer ${key}` } });
  if (!res.ok) throw await errorOf(res, 'Sign-in failed');
  /** @type {Me} */
  const me = await res.json();
  return me.owner;
}

/**
 * Downloads need the Authorization header, so a plain link cannot fetch them: fetch the bytes and
 * save them through a temporary Blob URL.
 * @param {string} fileId
 * @param {string} filename
 */
export async function downloadFile(fileId, filename) {
  const res = await send(`/v1/files/${encodeURIComponent(fileId)}/content`);
  if (!res.ok) throw await errorOf(res, `Download failed (${res.status})`);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
