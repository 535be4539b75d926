/* api.js: the session (a token kept in memory only: a signal, never localStorage,
 * sessionStorage or a cookie, so closing the tab signs out and no other script of the
 * origin can read it back later), the REST calls, and the live event stream. */
import { signal } from '@preact/signals';

/* { token, role, tenant_id, expires_at } while signed in, else null. */
export const session = signal(null);
/* Why the last session ended: null, 'expired' (a 401), or 'signed-out'. */
export const ended = signal(null);
/* 'off' | 'connecting' | 'live' | 'retrying': the event stream's state, shown in the header. */
export const liveState = signal('off');

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch (e) {
    return null;
  }
}

export async function signIn(key) {
  const res = await fetch('/api/v1/auth/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ key }),
  });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  const t = await res.json();
  ended.value = null;
  session.value = {
    token: t.access_token,
    role: t.role,
    tenant_id: t.tenant_id || null,
    expires_at: t.expires_at,
  };
}

export function signOut(why = 'signed-out') {
  if (!session.value) return;
  session.value = null;
  ended.value = why;
}

/* A call of the REST API with the session's token. A 401 ends the session (the token
 * expired or its key was revoked): the page then says so. */
export async function api(method, path, body) {
  const s = session.value;
  if (!s) throw new ApiError(401, { detail: 'not signed in' });
  const headers = { Authorization: `Bearer ${s.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    if (session.value === s) signOut('expired');
    throw new ApiError(401, await problemOf(res));
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  if (res.status === 204) return null;
  return res.json();
}

export const canOperate = () => {
  const r = session.value && session.value.role;
  return r === 'operator' || r === 'admin';
};

/* The tenant's events (GET /api/v1/events, text/event-stream) through fetch(), which can
 * send the Authorization header (EventSource cannot). Each event is handed to every
 * listener as {type, data}. Reconnects after a failure with a growing delay, and stops when
 * the session ends. */
const listeners = new Set();
let streamFor = null;
let streamAbort = null;

export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function dispatch(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  let parsed;
  try {
    parsed = JSON.parse(data.join('\n'));
  } catch (e) {
    return;
  }
  for (const fn of listeners) fn({ type, data: parsed });
}

async function runStream(s) {
  let delay = 500;
  let first = true;
  while (session.value === s) {
    liveState.value = 'connecting';
    try {
      streamAbort = new AbortController();
      const res = await fetch('/api/v1/events', {
        signal: streamAbort.signal,
        headers: { Authorization: `Bearer ${s.token}`, Accept: 'text/event-stream' },
      });
      if (res.status === 401) {
        if (session.value === s) signOut('expired');
        break;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      liveState.value = 'live';
      delay = 500;
      /* Back after a break: what happened meanwhile was not streamed; reread. */
      if (!first) for (const fn of listeners) fn({ type: 'resync', data: {} });
      first = false;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || session.value !== s) {
          reader.cancel().catch(() => {});
          break;
        }
        buf += value.replace(/\r\n?/g, '\n');
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          dispatch(buf.slice(0, k));
          buf = buf.slice(k + 2);
        }
      }
    } catch (e) {
      /* retried below */
    }
    if (session.value !== s) break;
    liveState.value = 'retrying';
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
  if (streamFor === s) {
    streamFor = null;
    liveState.value = 'off';
  }
}

session.subscribe((s) => {
  if (streamFor && streamFor !== s && streamAbort) streamAbort.abort();
  /* The stream is a tenant's: a platform operator's token would be refused (403). */
  if (s && s.tenant_id && streamFor !== s) {
    streamFor = s;
    runStream(s);
  }
});
