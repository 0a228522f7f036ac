// Talks to this server only: the /v1 Batch API and the dashboard's /api/dashboard routes, with
// the API key the user signed in with (kept in localStorage, sent as a Bearer token).

const STORAGE_KEY = 'fusillade.apiKey';

export const session = {
  get key() {
    return localStorage.getItem(STORAGE_KEY);
  },
  signIn(key) {
    localStorage.setItem(STORAGE_KEY, key);
  },
  signOut() {
    localStorage.removeItem(STORAGE_KEY);
    window.dispatchEvent(new Event('fusillade:signed-out'));
  },
};

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function send(path, { method = 'GET', body, signal } = {}) {
  const headers = { authorization: `Bearer ${session.key ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError('The server cannot be reached.', 0, 'network_error');
  }
  if (res.status === 401) {
    session.signOut();
    throw new ApiError('Your API key was not accepted. Sign in again.', 401, 'invalid_api_key');
  }
  return res;
}

/** JSON request; non-2xx answers become an ApiError with the server's message. */
export async function api(path, options) {
  const res = await send(path, options);
  const data = await res.json().catch(() => null);
  if (!res.ok)
    throw new ApiError(
      data?.error?.message ?? `${res.status} ${res.statusText}`,
      res.status,
      data?.error?.code,
    );
  return data;
}

/** Checks a key without storing it: the owner's name, or an ApiError. */
export async function whoAmI(key) {
  const res = await fetch('/api/dashboard/me', { headers: { authorization: `Bearer ${key}` } });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(data?.error?.message ?? 'Sign-in failed', res.status, data?.error?.code);
  return data.owner;
}

/**
 * Downloads need the Authorization header, so a plain link cannot fetch them: fetch the bytes and
 * save them through a temporary Blob URL.
 */
export async function downloadFile(fileId, filename) {
  const res = await send(`/v1/files/${encodeURIComponent(fileId)}/content`);
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new ApiError(
      data?.error?.message ?? `Download failed (${res.status})`,
      res.status,
      data?.error?.code,
    );
  }
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
