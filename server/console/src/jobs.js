/* jobs.js: the jobs page: filters applied by the server (GET /api/v1/jobs' status,
 * queue_id, agent_id, created_after, created_before), cursor paging, submit, cancel and
 * retry, and rows kept current by the event stream (no polling). */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, canOperate, onEvent } from './api.js';
import { loadPaged } from './ui.js';

const STATUSES = ['queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled', 'dead'];
const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'dead']);
const PAGE = 50;

const jobs = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const filters = signal({ status: '', queue_id: '', agent_id: '', after: '', before: '' });

/* Times in the viewer's zone, with the zone's name, to the second. */
const timeFmt = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'short',
  timeStyle: 'medium',
});
export function localTime(iso) {
  return iso ? timeFmt.format(new Date(iso)) : '';
}

export function duration(ms) {
  if (ms == null || ms < 0) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function query(f, after) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (f.status) q.set('status', f.status);
  if (f.queue_id) q.set('queue_id', f.queue_id.trim());
  if (f.agent_id) q.set('agent_id', f.agent_id.trim());
  if (f.after) q.set('created_after', new Date(f.after).toISOString());
  if (f.before) q.set('created_before', new Date(f.before).toISOString());
  if (after) q.set('cursor', after);
  return `/api/v1/jobs?${q}`;
}

function load(more) {
  return loadPaged({ list: jobs, cursor, loading, error },
    (c) => api('GET', query(filters.value, c)), more);
}

/* Whether a job (as an event describes it) belongs in the list the filters ask for. */
function wanted(f, d) {
  if (f.status && d.status !== f.status) return false;
  if (f.queue_id && d.queue_id !== f.queue_id.trim()) return false;
  if (f.agent_id || f.after || f.before) return false; /* only the server can tell */
  return true;
}

/* The latest event seen per job: a job read after an event is applied only if no newer
 * event came meanwhile, so a slow read never puts an older status back. */
const latest = new Map();

function replaceRow(j) {
  const k = jobs.value.findIndex((x) => x.id === j.id);
  if (k < 0) return;
  const next = jobs.value.slice();
  next[k] = j;
  jobs.value = next;
}

/* A job event: update the row in place; a job new to the list is fetched and put first. */
async function onJobEvent(ev) {
  if (ev.type === 'resync') {
    load(false);
    return;
  }
  const d = ev.data && ev.data.data;
  /* job.output is new output, not a change of status (the job page reads it). */
  if (!ev.type.startsWith('job.') || ev.type === 'job.output' || !d || !d.job_id) return;
  const seq = (latest.get(d.job_id) || 0) + 1;
  latest.set(d.job_id, seq);
  const i = jobs.value.findIndex((j) => j.id === d.job_id);
  if (i >= 0) replaceRow({ ...jobs.value[i], status: d.status });
  else if (!wanted(filters.value, d)) return;
  /* The rest (agent, exit code, times) from the job itself. */
  let j;
  try {
    j = await api('GET', `/api/v1/jobs/${d.job_id}`);
  } catch (e) {
    return; /* the row keeps the status the event gave */
  }
  if (latest.get(d.job_id) !== seq) return;
  if (jobs.value.some((x) => x.id === j.id)) replaceRow(j);
  else jobs.value = [j, ...jobs.value];
}

function Filters() {
  const [f, setF] = useState(filters.value);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    filters.value = f;
    load(false);
  };
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter jobs">
    <label>Status
      <select value=${f.status} onChange=${set('status')} name="status">
        <option value="">any</option>
        ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
    <label>Queue id <input name="queue_id" value=${f.queue_id} onInput=${set('queue_id')}
      placeholder="uuid" size="12" /></label>
    <label>Agent id <input name="agent_id" value=${f.agent_id} onInput=${set('agent_id')}
      placeholder="uuid" size="12" /></label>
    <label>Created after <input type="datetime-local" step="1" name="after" value=${f.after}
      onInput=${set('after')} /></label>
    <label>Created before <input type="datetime-local" step="1" name="before" value=${f.before}
      onInput=${set('before')} /></label>
    <button type="submit">Apply</button>
  </form>`;
}

function Submit() {
  const [queue, setQueue] = useState('');
  const [command, setCommand] = useState('');
  const [msg, setMsg] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setMsg(null);
    try {
      const body = { command };
      if (queue.trim()) body.queue = queue.trim();
      const j = await api('POST', '/api/v1/jobs', body);
      setMsg({ ok: true, text: `Submitted job ${j.id.slice(0, 8)}` });
      setCommand('');
      if (!jobs.value.some((x) => x.id === j.id) && wanted(filters.value, { ...j, job_id: j.id }))
        jobs.value = [j, ...jobs.value];
    } catch (err) {
      setMsg({ ok: false, text: err.message });
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="submit" onSubmit=${submit} aria-label="Submit a job">
    <label>Queue <input name="queue" value=${queue} onInput=${(e) => setQueue(e.target.value)}
      placeholder="default" size="10" /></label>
    <label class="grow">Command <input name="command" required value=${command}
      onInput=${(e) => setCommand(e.target.value)} placeholder="echo hello" /></label>
    <button type="submit" disabled=${busy}>Submit job</button>
    ${msg && html`<p role="status" class=${msg.ok ? 'ok' : 'err'}>${msg.text}</p>`}
  </form>`;
}

async function cancel(id) {
  try {
    await api('POST', `/api/v1/jobs/${id}/cancel`);
  } catch (e) {
    error.value = e.message;
  }
}

/* A finished job submitted again (POST /api/v1/jobs/{id}/retry): the new job goes first
 * when the filters want it; its events keep it current. */
async function retry(id) {
  try {
    const j = await api('POST', `/api/v1/jobs/${id}/retry`);
    error.value = null;
    if (!jobs.value.some((x) => x.id === j.id) && wanted(filters.value, { ...j, job_id: j.id }))
      jobs.value = [j, ...jobs.value];
  } catch (e) {
    error.value = e.message;
  }
}

function Actions({ j }) {
  if (!canOperate()) return '';
  if (ENDED.has(j.status))
    return html`<button class="small alt" data-action="retry" onClick=${() => retry(j.id)}
      aria-label=${`Retry job ${j.id.slice(0, 8)}`}>Retry</button>`;
  if (j.cancel_requested) return '';
  return html`<button class="small" data-action="cancel" onClick=${() => cancel(j.id)}
    aria-label=${`Cancel job ${j.id.slice(0, 8)}`}>Cancel</button>`;
}

function Row({ j }) {
  const ran = j.started_at
    ? (j.finished_at ? Date.parse(j.finished_at) : Date.now()) - Date.parse(j.started_at)
    : null;
  return html`<tr data-job=${j.id}>
    <td><a href=${`#/jobs/${j.id}`} aria-label=${`Job ${j.id}`}>
      <code title=${j.id}>${j.id.slice(0, 8)}</code></a>${j.retry_of &&
      html` <small class="muted" title=${`retry of ${j.retry_of}`}>retry</small>`}</td>
    <td>${j.queue || ''}</td>
    <td><span class=${`status s-${j.status}`} data-status=${j.status}>${j.status}</span>
      ${j.cancel_requested && !ENDED.has(j.status) ? html` <small>(cancelling)</small>` : ''}</td>
    <td class="cmd"><code>${j.command || j.entrypoint || ''}</code></td>
    <td>${j.attempt ?? ''}</td>
    <td><time datetime=${j.created_at}>${localTime(j.created_at)}</time></td>
    <td class="num">${duration(ran)}</td>
    <td>${j.exit_code ?? ''}</td>
    <td><${Actions} j=${j} /></td>
  </tr>`;
}

export function JobsPage() {
  useEffect(() => {
    load(false);
    return onEvent(onJobEvent);
  }, []);
  return html`<section aria-labelledby="jobs-h">
    <h1 id="jobs-h">Jobs</h1>
    ${canOperate() && html`<${Submit} />`}
    <${Filters} />
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap">
      <table class="jobs">
        <thead><tr>
          <th scope="col">Job</th><th scope="col">Queue</th><th scope="col">Status</th>
          <th scope="col">Command</th><th scope="col">Attempt</th><th scope="col">Created</th>
          <th scope="col">Ran</th><th scope="col">Exit</th><th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${jobs.value.map((j) => html`<${Row} key=${j.id} j=${j} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && jobs.value.length === 0 && html`<p class="empty">No jobs match.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
  </section>`;
}
