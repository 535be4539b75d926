/* webhooks.js: the webhooks page: the tenant's subscriptions (GET /api/v1/webhooks with its
 * cursor) and, for the one chosen (#/webhooks/<id>), its delivery log (GET
 * /api/v1/webhooks/{id}/deliveries, cursor paging). Admins create (the signing secret is shown
 * once, as the API returns it, and kept nowhere), enable, disable and delete subscriptions
 * and resend deliveries. Deliveries change without an event of their own: an event the
 * subscription wants rereads the log, and a timer at the next attempt's time does too. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, onEvent, session } from './api.js';
import { localTime } from './jobs.js';
import { until, viewerZone } from './schedules.js';
import { loadPaged, pageQuery } from './ui.js';

const PAGE = 50;
const PAGE_MAX = 500;
const REREAD_DEBOUNCE_MS = 1000;
const ATTEMPT_GRACE_MS = 1000;
const OVERDUE_MIN_MS = 2000;
const OVERDUE_MAX_MS = 60000;
const TICK_MS = 10000;

/* The event types a subscription may name (docs/api.md, "Webhooks"). */
const EVENT_TYPES = ['job.queued', 'job.assigned', 'job.running', 'job.succeeded', 'job.failed',
  'job.cancelled', 'job.dead', 'agent.online', 'agent.offline', 'schedule.fired',
  'schedule.skipped', 'scale.up', 'scale.down', 'quota.near', 'quota.exceeded'];

const hooks = signal([]);
const hooksCursor = signal(null);
const loading = signal(false);
const error = signal(null);
/* The chosen subscription (its document) and its deliveries. */
const chosen = signal(null);
const chosenErr = signal(null);
const deliveries = signal([]);
const delCursor = signal(null);
const delLoading = signal(false);
const now = signal(Date.now());

/* Mutations are a tenant admin's (or a platform operator's, for the platform's own). */
const canAdmin = () => {
  const s = session.value;
  return !!s && (s.role === 'admin' || !s.tenant_id);
};

function loadHooks(more) {
  return loadPaged({ list: hooks, cursor: hooksCursor, loading, error },
    (c) => api('GET', `/api/v1/webhooks?${pageQuery(PAGE, c)}`), more);
}

let chosenId = null;

/* The log of the chosen subscription: a reread covers as many rows as are shown. */
async function loadDeliveries(more) {
  const id = chosenId;
  if (!id) return;
  delLoading.value = true;
  try {
    const n = more ? PAGE : Math.min(PAGE_MAX, Math.max(PAGE, deliveries.value.length));
    const q = new URLSearchParams({ limit: String(n) });
    if (more && delCursor.value) q.set('cursor', delCursor.value);
    const page = await api('GET', `/api/v1/webhooks/${id}/deliveries?${q}`);
    if (id !== chosenId) return;
    deliveries.value = more ? [...deliveries.value, ...page.items] : page.items;
    delCursor.value = page.next_cursor || null;
  } catch (e) {
    if (id === chosenId) chosenErr.value = e.message;
  } finally {
    delLoading.value = false;
  }
  armAttemptTimer();
}

async function choose(id) {
  chosenId = id || null;
  chosen.value = null;
  chosenErr.value = null;
  deliveries.value = [];
  delCursor.value = null;
  armAttemptTimer();
  if (!id) return;
  try {
    const w = await api('GET', `/api/v1/webhooks/${id}`);
    if (id !== chosenId) return;
    chosen.value = w;
  } catch (e) {
    if (id === chosenId)
      chosenErr.value = e.status === 404 ? 'There is no such subscription.' : e.message;
    return;
  }
  await loadDeliveries(false);
}

/* One timer at the earliest next attempt of the deliveries shown: the outcome of an attempt
 * is read once it is due. A delivery in flight is looked at again shortly. Times still
 * passed after the reread (no worker free) are tried again with a growing delay. */
let attemptTimer = null;
let overdueMs = OVERDUE_MIN_MS;
function armAttemptTimer() {
  clearTimeout(attemptTimer);
  attemptTimer = null;
  if (!chosenId) return;
  let first = Infinity;
  for (const d of deliveries.value) {
    if (d.status === 'delivering') first = Math.min(first, Date.now());
    else if (d.status === 'pending' && d.next_attempt_at)
      first = Math.min(first, Date.parse(d.next_attempt_at));
  }
  if (first === Infinity) {
    overdueMs = OVERDUE_MIN_MS;
    return;
  }
  let delay = first + ATTEMPT_GRACE_MS - Date.now();
  if (delay <= 0) {
    delay = overdueMs;
    overdueMs = Math.min(overdueMs * 2, OVERDUE_MAX_MS);
  } else {
    overdueMs = OVERDUE_MIN_MS;
  }
  attemptTimer = setTimeout(() => loadDeliveries(false), delay);
}

let rereadTimer = null;
function onHookEvent(ev) {
  if (ev.type === 'resync') {
    loadHooks(false);
    loadDeliveries(false);
    return;
  }
  const w = chosen.value;
  /* An event the chosen subscription wants makes a delivery: one reread per burst. */
  if (!w || !w.enabled || !w.events.includes(ev.type) || rereadTimer) return;
  rereadTimer = setTimeout(() => {
    rereadTimer = null;
    loadDeliveries(false);
  }, REREAD_DEBOUNCE_MS);
}

function replaceHook(w) {
  hooks.value = hooks.value.map((x) => (x.id === w.id ? w : x));
  if (chosen.value && chosen.value.id === w.id) chosen.value = w;
}

async function setEnabled(w, enabled) {
  error.value = null;
  try {
    replaceHook(await api('PATCH', `/api/v1/webhooks/${w.id}`, { enabled }));
  } catch (e) {
    error.value = `${w.url}: ${e.message}`;
  }
}

async function remove(w) {
  if (!confirm(`Delete the subscription to ${w.url}? Its delivery log goes with it.`)) return;
  error.value = null;
  try {
    await api('DELETE', `/api/v1/webhooks/${w.id}`);
    hooks.value = hooks.value.filter((x) => x.id !== w.id);
    if (chosenId === w.id) location.hash = '#/webhooks';
  } catch (e) {
    error.value = `${w.url}: ${e.message}`;
  }
}

async function resend(d) {
  chosenErr.value = null;
  try {
    const n = await api('POST', `/api/v1/webhooks/${d.webhook_id}/deliveries/${d.id}/resend`);
    if (!delCursor.value) deliveries.value = [...deliveries.value, n];
    armAttemptTimer();
  } catch (e) {
    chosenErr.value = `resend: ${e.message}`;
  }
}

/* The admin's form. The secret of a new subscription is shown here once, from the answer to
 * the creation, and forgotten when dismissed: the API never shows it again. */
function Create() {
  const [url, setUrl] = useState('');
  const [events, setEvents] = useState(new Set(['job.failed', 'job.dead']));
  const [desc, setDesc] = useState('');
  const [msg, setMsg] = useState(null);
  const [secret, setSecret] = useState(null);
  const [busy, setBusy] = useState(false);
  const flip = (t) => {
    const n = new Set(events);
    if (n.has(t)) n.delete(t);
    else n.add(t);
    setEvents(n);
  };
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setMsg(null);
    try {
      const body = { url: url.trim(), events: EVENT_TYPES.filter((t) => events.has(t)) };
      if (desc.trim()) body.description = desc.trim();
      const w = await api('POST', '/api/v1/webhooks', body);
      setSecret({ url: w.url, value: w.secret });
      setUrl('');
      setDesc('');
      if (!hooksCursor.value) hooks.value = [...hooks.value, { ...w, secret: undefined }];
    } catch (err) {
      setMsg(err.message);
    } finally {
      setBusy(false);
    }
  };
  if (secret)
    return html`<div class="notice secret" role="alert">
      <p><strong>Subscription created for ${secret.url}.</strong> Its signing secret is shown
        this once: store it where the receiver can read it.</p>
      <p><code id="new-secret">${secret.value}</code></p>
      <button onClick=${() => setSecret(null)}>I have stored it</button>
    </div>`;
  return html`<details class="create">
    <summary>New subscription</summary>
    <form class="submit" onSubmit=${submit} aria-label="Create a subscription">
      <label class="grow">URL (https) <input name="url" type="url" required maxlength="2048"
        value=${url} onInput=${(e) => setUrl(e.target.value)}
        placeholder="https://hooks.example.com/orch" /></label>
      <label class="grow">Description <input name="description" maxlength="1024" value=${desc}
        onInput=${(e) => setDesc(e.target.value)} /></label>
      <fieldset class="events"><legend>Events</legend>
        ${EVENT_TYPES.map((t) => html`<label class="check"><input type="checkbox" name="event"
          value=${t} checked=${events.has(t)} onChange=${() => flip(t)} /> ${t}</label>`)}
      </fieldset>
      <button type="submit" disabled=${busy || events.size === 0}>Create subscription</button>
      ${msg && html`<p role="status" class="err">${msg}</p>`}
    </form>
  </details>`;
}

function HookRow({ w }) {
  const isChosen = chosen.value && chosen.value.id === w.id;
  return html`<tr data-webhook=${w.id} class=${isChosen ? 'chosen' : ''}>
    <td class="wrap"><a href=${`#/webhooks/${w.id}`} aria-current=${isChosen ? 'true' : undefined}
      title="Show its deliveries"><code>${w.url}</code></a>
      ${w.description && html`<br /><small class="muted">${w.description}</small>`}</td>
    <td class="wrap">${w.events.map((t) => html`<span class="tag">${t}</span> `)}</td>
    <td><span class=${`status ${w.enabled ? 'q-active' : 'q-paused'}`}
      data-enabled=${String(w.enabled)}>${w.enabled ? 'enabled' : 'disabled'}</span></td>
    <td><code title="The secret's first characters; the secret itself was shown once">
      ${w.secret_prefix}…</code></td>
    <td><time datetime=${w.created_at}>${localTime(w.created_at)}</time></td>
    <td class="acts">${canAdmin() && html`${w.enabled
      ? html`<button class="small" data-action="disable" onClick=${() => setEnabled(w, false)}
          aria-label=${`Disable the subscription to ${w.url}`}>Disable</button>`
      : html`<button class="small alt" data-action="enable" onClick=${() => setEnabled(w, true)}
          aria-label=${`Enable the subscription to ${w.url}`}>Enable</button>`}
      ${' '}<button class="small" data-action="delete" onClick=${() => remove(w)}
        aria-label=${`Delete the subscription to ${w.url}`}>Delete</button>`}</td>
  </tr>`;
}

const STATUS_CLASS = { pending: 'd-pending', delivering: 's-running', succeeded: 's-succeeded',
  failed: 's-failed' };

function DeliveryRow({ d }) {
  return html`<tr data-delivery=${d.id} data-type=${d.type}>
    <td><code>${d.type}</code></td>
    <td><span class=${`status ${STATUS_CLASS[d.status] || ''}`} data-status=${d.status}>
      ${d.status}</span></td>
    <td class="num" data-attempts>${d.attempts}</td>
    <td class="num" data-code>${d.last_status_code != null
      ? `HTTP ${d.last_status_code}` : html`<span class="empty">none</span>`}</td>
    <td class="wrap" data-error>${d.last_error
      ? html`<small class="err">${d.last_error}</small>` : ''}</td>
    <td>${d.next_attempt_at
      ? html`<time datetime=${d.next_attempt_at}>${localTime(d.next_attempt_at)}</time>
          <br /><small class="muted">${until(d.next_attempt_at, now.value)}</small>`
      : html`<span class="empty">none</span>`}</td>
    <td><time datetime=${d.created_at}>${localTime(d.created_at)}</time></td>
    <td>${d.delivered_at ? html`<time datetime=${d.delivered_at}>${localTime(d.delivered_at)}</time>`
      : html`<span class="empty">${d.status === 'failed' ? 'never' : 'not yet'}</span>`}</td>
    <td class="acts">${canAdmin() && html`<button class="small alt" data-action="resend"
      onClick=${() => resend(d)} aria-label=${`Resend the ${d.type} event`}>Resend</button>`}</td>
  </tr>`;
}

function Deliveries() {
  const w = chosen.value;
  return html`<section class="panel" aria-labelledby="deliveries-h" id="deliveries">
    <h2 id="deliveries-h">Deliveries${w && html` to <code>${w.url}</code>`}</h2>
    ${chosenErr.value && html`<p class="err" role="alert">${chosenErr.value}</p>`}
    ${w && html`<p class="hint">Oldest first, as the API lists them. Each attempt waits at most
      10 s for a 2xx answer; failures are retried with a growing, random delay.</p>
    <div class="table-wrap">
      <table class="deliveries">
        <thead><tr>
          <th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th>
          <th scope="col">Last response</th><th scope="col">Last error</th>
          <th scope="col">Next attempt</th><th scope="col">Created</th>
          <th scope="col">Delivered</th><th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${deliveries.value.map((d) => html`<${DeliveryRow} key=${d.id} d=${d} />`)}</tbody>
      </table>
    </div>
    ${!delLoading.value && deliveries.value.length === 0 &&
      html`<p class="empty">No deliveries yet: none of its events has happened since it was made.</p>`}
    ${delCursor.value && html`<button onClick=${() => loadDeliveries(true)}
      disabled=${delLoading.value}>Load more</button>`}`}
  </section>`;
}

export function WebhooksPage({ arg }) {
  useEffect(() => {
    loadHooks(false);
    const off = onEvent(onHookEvent);
    const tick = setInterval(() => {
      now.value = Date.now();
    }, TICK_MS);
    return () => {
      off();
      clearInterval(tick);
      clearTimeout(rereadTimer);
      rereadTimer = null;
      chosenId = null;
      clearTimeout(attemptTimer);
      attemptTimer = null;
    };
  }, []);
  useEffect(() => {
    choose(arg);
  }, [arg]);
  return html`<section aria-labelledby="webhooks-h">
    <h1 id="webhooks-h">Webhooks</h1>
    <p class="hint">Times are in your zone, ${viewerZone}.</p>
    ${canAdmin() && html`<${Create} />`}
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap">
      <table class="webhooks">
        <thead><tr>
          <th scope="col">URL</th><th scope="col">Events</th><th scope="col">State</th>
          <th scope="col">Secret</th><th scope="col">Created</th>
          <th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${hooks.value.map((w) => html`<${HookRow} key=${w.id} w=${w} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && hooks.value.length === 0 && html`<p class="empty">No subscriptions.</p>`}
    ${hooksCursor.value && html`<button onClick=${() => loadHooks(true)} disabled=${loading.value}>
      Load more</button>`}
    ${arg ? html`<${Deliveries} />`
      : hooks.value.length > 0 && html`<p class="hint">Choose a subscription's URL to see its
        deliveries.</p>`}
  </section>`;
}
