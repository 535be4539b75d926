/* queues.js: the queues page: GET /api/v1/queues with its cursor, each queue's depth and
 * running jobs from GET /api/v1/scaling/signals (the queue itself does not carry them), its
 * limits; pause, resume and create (operator and admin) through the same REST API. Job events
 * re-read the counts, at most once a second; queue.* events change, add or remove the queue's
 * row: no timer polls. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, canOperate, onEvent } from './api.js';

const PAGE = 50;
const COUNTS_DEBOUNCE_MS = 1000;
const queues = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
/* queue id -> {queued, delayed, running}, from the signals. */
const counts = signal(new Map());

async function loadCounts() {
  try {
    const s = await api('GET', '/api/v1/scaling/signals');
    const t = (s.tenants || [])[0];
    counts.value = new Map(((t && t.queues) || []).map((q) => [q.queue_id, q]));
  } catch (e) {
    error.value = e.message;
  }
}

/* queue.* events applied so far: a list read while one came in may predate it, and would
 * undo it (a queue created then would vanish), so such a read is made again. */
let changes = 0;

async function load(more) {
  loading.value = true;
  error.value = null;
  try {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (more && cursor.value) q.set('cursor', cursor.value);
    let page;
    for (let tries = 0; tries < 3; tries++) {
      const before = changes;
      [page] = await Promise.all([api('GET', `/api/v1/queues?${q}`), loadCounts()]);
      if (changes === before) break;
    }
    queues.value = more ? [...queues.value, ...page.items] : page.items;
    cursor.value = page.next_cursor || null;
  } catch (e) {
    error.value = e.message;
  } finally {
    loading.value = false;
  }
}

/* The latest queue.* event per queue: a read after an event is applied only if no newer one
 * came meanwhile. */
const latest = new Map();

/* A queue changed (queue.created, .updated, .paused, .resumed, .deleted): the row takes the
 * event's state at once, then the queue is read again for the rest. */
async function onQueueChange(ev) {
  const d = ev.data && ev.data.data;
  if (!d || !d.queue_id) return;
  changes++;
  const seq = (latest.get(d.queue_id) || 0) + 1;
  latest.set(d.queue_id, seq);
  if (ev.type === 'queue.deleted') {
    queues.value = queues.value.filter((q) => q.id !== d.queue_id);
    return;
  }
  const i = queues.value.findIndex((q) => q.id === d.queue_id);
  if (i >= 0 && typeof d.paused === 'boolean') replace({ ...queues.value[i], paused: d.paused });
  let q;
  try {
    q = await api('GET', `/api/v1/queues/${d.queue_id}`);
  } catch (e) {
    return; /* the row keeps what the event said */
  }
  if (latest.get(d.queue_id) !== seq) return;
  if (queues.value.some((x) => x.id === q.id)) replace(q);
  else if (!cursor.value) queues.value = [...queues.value, q]; /* new, and the list is whole */
}

let countsTimer = null;
function onQueueEvent(ev) {
  if (ev.type === 'resync') {
    load(false);
    return;
  }
  if (ev.type.startsWith('queue.')) {
    onQueueChange(ev);
    return;
  }
  if (!ev.type.startsWith('job.') || ev.type === 'job.output' || countsTimer) return;
  /* A burst of job events makes one read, a second after the first of them. */
  countsTimer = setTimeout(() => {
    countsTimer = null;
    loadCounts();
  }, COUNTS_DEBOUNCE_MS);
}

function replace(q) {
  queues.value = queues.value.map((x) => (x.id === q.id ? q : x));
}

async function setPaused(q, paused) {
  error.value = null;
  try {
    replace(await api('PATCH', `/api/v1/queues/${q.id}`, { paused }));
  } catch (e) {
    error.value = `${q.name}: ${e.message}`;
  }
}

function Create() {
  const [name, setName] = useState('');
  const [max, setMax] = useState('');
  const [msg, setMsg] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setMsg(null);
    try {
      const body = { name: name.trim() };
      if (max !== '') body.max_running = Number(max);
      const q = await api('POST', '/api/v1/queues', body);
      setMsg({ ok: true, text: `Created queue ${q.name}` });
      setName('');
      setMax('');
      if (!cursor.value && !queues.value.some((x) => x.id === q.id))
        queues.value = [...queues.value, q];
    } catch (err) {
      setMsg({ ok: false, text: err.message });
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="submit" onSubmit=${submit} aria-label="Create a queue">
    <label>Name <input name="qname" required value=${name} maxlength="64"
      onInput=${(e) => setName(e.target.value)} placeholder="builds" size="14" /></label>
    <label>Max running <input name="max_running" type="number" min="1" max="100000"
      value=${max} onInput=${(e) => setMax(e.target.value)} placeholder="no limit" size="8" /></label>
    <button type="submit" disabled=${busy}>Create queue</button>
    ${msg && html`<p role="status" class=${msg.ok ? 'ok' : 'err'}>${msg.text}</p>`}
  </form>`;
}

function Requirements({ r }) {
  const e = Object.entries(r || {});
  if (!e.length) return html`<span class="empty">any agent</span>`;
  return e.map(([k, v]) => html`<span class="tag">${k}=${String(v)}</span> `);
}

function Row({ q }) {
  const c = counts.value.get(q.id);
  return html`<tr data-queue=${q.id} data-name=${q.name}>
    <td><strong>${q.name}</strong></td>
    <td><span class=${`status ${q.paused ? 'q-paused' : 'q-active'}`}
      data-paused=${String(q.paused)}>${q.paused ? 'paused' : 'active'}</span></td>
    <td class="num" data-queued>${c ? c.queued : ''}${c && c.delayed ? html` <small>(+${c.delayed} delayed)</small>` : ''}</td>
    <td class="num" data-running>${c ? c.running : ''}</td>
    <td class="num">${q.max_running ?? html`<span class="empty">none</span>`}</td>
    <td class="num">${q.default_priority}</td>
    <td class="wrap"><${Requirements} r=${q.requirements} /></td>
    <td>${canOperate() && (q.paused
      ? html`<button class="small alt" data-action="resume" onClick=${() => setPaused(q, false)}
          aria-label=${`Resume queue ${q.name}`}>Resume</button>`
      : html`<button class="small" data-action="pause" onClick=${() => setPaused(q, true)}
          aria-label=${`Pause queue ${q.name}`}>Pause</button>`)}</td>
  </tr>`;
}

export function QueuesPage() {
  useEffect(() => {
    load(false);
    const off = onEvent(onQueueEvent);
    return () => {
      off();
      clearTimeout(countsTimer);
      countsTimer = null;
    };
  }, []);
  return html`<section aria-labelledby="queues-h">
    <h1 id="queues-h">Queues</h1>
    ${canOperate() && html`<${Create} />`}
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap">
      <table class="queues">
        <thead><tr>
          <th scope="col">Queue</th><th scope="col">State</th><th scope="col">Queued</th>
          <th scope="col">Running</th><th scope="col">Max running</th>
          <th scope="col">Priority</th><th scope="col">Requirements</th>
          <th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${queues.value.map((q) => html`<${Row} key=${q.id} q=${q} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && queues.value.length === 0 && html`<p class="empty">No queues yet.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
  </section>`;
}
