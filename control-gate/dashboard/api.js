// The REST API (/api/v1), as the CLI uses it: a bearer token from
// POST /auth/login, JSON in and out, errors as {"error": "..."}.
//
// The token lives in sessionStorage: it is gone when the tab closes, and
// another site cannot read it. A 401 on a call that carried a token means
// the session is over (expired, revoked, the user deleted): the handler set
// with onSessionEnd sends the user back to the login form.

const KEY = 'isms.session';

let sessionEnded = () => {};

/** Called with the server's message when a token is refused. */
export function onSessionEnd(handler) {
  sessionEnded = handler;
}

/** {token, user, role, expires_ms} or null. */
export function session() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return saved && typeof saved.token === 'string' ? saved : null;
  } catch {
    return null;
  }
}

export function saveSession(value) {
  sessionStorage.setItem(KEY, JSON.stringify(value));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

/** An answer of the API that is not a success. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** What to tell the user about a failed call. */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  switch (err.status) {
    case 0: return err.message;
    case 403: return `Not allowed: ${err.message}`;
    case 503: return `Not available: ${err.message}`;
    default: return err.message;
  }
}

/**
 * Whether `used` (the session a call carried) is still the session: a
 * refusal of an older one, answered after the user logged in again, must
 * not end the new one.
 */
function isCurrent(used) {
  const now = session();
  return Boolean(used && now && now.token === used.token);
}

function path(p) {
  return p.startsWith('/') ? p : `/api/v1/${p}`;
}

/**
 * Calls the API. `json` is sent as a JSON body, `body` as is. Resolves to
 * the parsed JSON (or text, or null for 204); rejects with an ApiError.
 */
export async function call(method, p, { json, body, signal, raw, accept } = {}) {
  const headers = {};
  if (accept) headers.Accept = accept;
  const current = session();
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path(p), { method, headers, body, signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'Cannot reach the Control Gate: is the platform running?');
  }
  if (raw && response.ok) return response;
  const type = response.headers.get('content-type') || '';
  let payload = null;
  if (response.status !== 204) {
    const text = await response.text();
    if (type.includes('application/json') && text) {
      try { payload = JSON.parse(text); } catch { payload = text; }
    } else {
      payload = text;
    }
  }
  if (response.ok) return payload;
  const message = payload && typeof payload === 'object' && payload.error
    ? payload.error
    : `${response.status} ${response.statusText || 'error'}`;
  const err = new ApiError(response.status, message, payload);
  if (response.status === 401 && isCurrent(current)) {
    clearSession();
    sessionEnded(message);
  }
  throw err;
}

export const get = (p, options) => call('GET', p, options);
export const post = (p, json, options) => call('POST', p, { ...options, json });
export const put = (p, json, options) => call('PUT', p, { ...options, json });
export const del = (p, options) => call('DELETE', p, options);

/** Encodes a path segment (project, Doee, collection names). */
export const seg = encodeURIComponent;

/**
 * Follows a Server-Sent Events stream with the Authorization header, which
 * EventSource cannot send: fetch() and a stream reader. Calls
 * onEvent({event, id, data}) per event and returns when the stream ends or
 * `signal` aborts. Rejects with an ApiError when the server refuses.
 */
export async function follow(p, { signal, lastEventId, onEvent }) {
  const headers = { Accept: 'text/event-stream' };
  const current = session();
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (lastEventId) headers['Last-Event-ID'] = String(lastEventId);
  let response;
  try {
    response = await fetch(path(p), { headers, signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'Cannot reach the Control Gate: is the platform running?');
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch { /* keep the status */ }
    if (response.status === 401 && isCurrent(current)) {
      clearSession();
      sessionEnded(message);
    }
    throw new ApiError(response.status, message);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: 'message', id: null, data: '' };
      const data = [];
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (name === 'event') event.event = text;
        else if (name === 'id') event.id = text;
        else if (name === 'data') data.push(text);
      }
      if (data.length) {
        event.data = data.join('\n');
        onEvent(event);
      }
    }
  }
}
