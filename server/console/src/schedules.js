/* schedules.js: the schedules page: GET /api/v1/schedules with its cursor, each schedule's
 * cron and zone, queue, state, next run (the next five from GET /api/v1/schedules/{id} on
 * demand), last firing with its job's status (last_firing.job_status), and policies; enable,
 * disable and delete (operator and admin) through the same REST API. Kept current without
 * polling: a job event of a last firing's job changes its status in place; a new job while a
 * schedule is due, and a timer set for the next due time, reread the list. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, canOperate, onEvent } from './api.js';
import { localTime } from './jobs.js';
import { ago } from './agents.js';

const PAGE = 50;
const PAGE_MAX = 500; /* the API's limit: a reread covers at most this many rows */
const REREAD_DEBOUNCE_MS = 500;
/* After a due time, the scheduler (once a second) has fired and committed. */
const DUE_GRACE_MS = 2000;
const OVERDUE_MIN_MS = 2000;
const OVERDUE_MAX_MS = 60000;
const TIMER_MAX_MS = 6 * 3600 * 1000;
const TICK_MS = 10000;

const schedules = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const now = signal(Date.now());

/* "in 12 sec.", "in 3 hr.": how far ahead of `at` an instant is. */
const rel = new Intl.RelativeTimeFormat(undefined, { numeric: 'always', style: 'short' });
export function until(iso, at = Date.now()) {
  if (!iso) return '';
  at = Math.max(at, Date.now()); /* `at` is the page's clock, up to TICK_MS old */
  const s = Math.round((Date.parse(iso) - at) / 1000);
  if (s < 0) return ago(iso, at);
  if (s < 60) return rel.format(s, 'second');
  if (s < 3600) return rel.format(Math.round(s / 60), 'minute');
  if (s < 86400) return rel.format(Math.round(s / 3600), 'hour');
  return rel.format(Math.round(s / 86400), 'day');
}

/* The viewer's zone, named once on the page: every time shown is in it. */
export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/* Reads the first page again, as many rows as are shown (so a "Load more" is kept). */
async function load(more) {
  loading.value = true;
  error.value = null;
  try {
    const n = more ? PAGE : Math.min(PAGE_MAX, Math.max(PAGE, schedules.value.length));
    const q = new URLSearchParams({ limit: String(n) });
    if (more && cursor.value) q.set('cursor', cursor.value);
    const page = await api('GET', `/api/v1/schedules?${q}`);
    schedules.value = more ? [...schedules.value, ...page.items] : page.items;
    cursor.value = page.next_cursor || null;
  } catch (e) {
    error.value = e.message;
  } finally {
    loading.value = false;
  }
  armDueTimer();
}

let rereadTimer = null;
function rereadSoon() {
  if (rereadTimer) return;
  rereadTimer = setTimeout(() => {
    rereadTimer = null;
    load(false);
  }, REREAD_DEBOUNCE_MS);
}

/* One timer, at the earliest next run of the schedules shown (plus the scheduler's grace):
 * a firing, fired or skipped, is read when it is due, not by polling. A time still passed
 * after the reread (no scheduler is running) is tried again with a growing delay. */
let dueTimer = null;
let overdueMs = OVERDUE_MIN_MS;
function armDueTimer() {
  clearTimeout(dueTimer);
  dueTimer = null;
  if (!active) return;
  let first = Infinity;
  for (const s of schedules.value)
    if (s.enabled && s.next_run_at) first = Math.min(first, Date.parse(s.next_run_at));
  if (first === Infinity) return;
  let delay = first + DUE_GRACE_MS - Date.now();
  if (first <= Date.now() - DUE_GRACE_MS) {
    delay = overdueMs;
    overdueMs = Math.min(overdueMs * 2, OVERDUE_MAX_MS);
  } else {
    overdueMs = OVERDUE_MIN_MS;
  }
  dueTimer = setTimeout(() => load(false), Math.min(Math.max(delay, 200), TIMER_MAX_MS));
}

function isDue(s) {
  return s.enabled && s.next_run_at && Date.parse(s.next_run_at) <= Date.now() + DUE_GRACE_MS;
}

function onScheduleEvent(ev) {
  if (ev.type === 'resync') {
    load(false);
    return;
  }
  const d = ev.data && ev.data.data;
  /* job.output says a job wrote, not that its status changed. */
  if (!ev.type.startsWith('job.') || ev.type === 'job.output' || !d || !d.job_id) return;
  let known = false;
  const next = schedules.value.map((s) => {
    if (!s.last_firing || s.last_firing.job_id !== d.job_id) return s;
    known = true;
    return { ...s, last_firing: { ...s.last_firing, job_status: d.status } };
  });
  if (known) schedules.value = next;
  /* A firing submits its job (job.queued) in the transaction that records it. */
  else if (ev.type === 'job.queued' && schedules.value.some(isDue)) rereadSoon();
}

function replace(s) {
  schedules.value = schedules.value.map((x) => (x.id === s.id ? s : x));
  armDueTimer();
}

async function setEnabled(s, enabled) {
  error.value = null;
  try {
    replace(await api('PATCH', `/api/v1/schedules/${s.id}`, { enabled }));
  } catch (e) {
    error.value = `${s.name}: ${e.message}`;
  }
}

async function remove(s) {
  if (!confirm(`Delete the schedule ${s.name}? Its firing records go with it; the jobs it ` +
      'submitted stay.'))
    return;
  error.value = null;
  try {
    await api('DELETE', `/api/v1/schedules/${s.id}`);
    schedules.value = schedules.value.filter((x) => x.id !== s.id);
    armDueTimer();
  } catch (e) {
    error.value = `${s.name}: ${e.message}`;
  }
}

/* The schedule's zone's wall time of a run ("02:30 +01:00"), from next_runs[].local. */
function wall(local) {
  const m = /T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?([+-]\d\d:\d\d|Z)$/.exec(local || '');
  return m ? `${m[1]} ${m[2] === 'Z' ? 'UTC' : m[2]}` : local;
}

/* The next five runs, read when the disclosure is opened (the list does not carry them). */
function NextRuns({ s }) {
  const [runs, setRuns] = useState(null);
  const [err, setErr] = useState(null);
  const toggle = async (e) => {
    if (!e.currentTarget.open) return;
    setErr(null);
    try {
      setRuns((await api('GET', `/api/v1/schedules/${s.id}`)).next_runs || []);
    } catch (x) {
      setErr(x.message);
    }
  };
  return html`<details class="runs" onToggle=${toggle}>
    <summary>next 5</summary>
    ${err && html`<p class="err">${err}</p>`}
    ${runs && html`<ol data-next-runs>${runs.map((r) => html`<li>
      <time datetime=${r.at}>${localTime(r.at)}</time>
      <small class="muted"> (${wall(r.local)} in ${s.timezone})</small></li>`)}</ol>`}
  </details>`;
}

function LastFiring({ f }) {
  if (!f) return html`<span class="empty">never fired</span>`;
  const when = html`<time datetime=${f.scheduled_for} title=${`recorded ${localTime(f.fired_at)}`}>
    ${localTime(f.scheduled_for)}</time>`;
  if (f.status === 'skipped')
    return html`${when}<br /><span class="status s-cancelled" data-firing="skipped">skipped</span>
      ${f.reason && html` <small>${f.reason}</small>`}`;
  return html`${when}<br /><a href=${`#/jobs/${f.job_id}`} data-last-job=${f.job_id}
    aria-label=${`The job it submitted, ${f.job_status || 'gone'}`}>job</a>
    ${' '}<span class=${`status s-${f.job_status || 'cancelled'}`}
      data-job-status=${f.job_status || 'gone'}>${f.job_status || 'gone'}</span>`;
}

function Actions({ s }) {
  if (!canOperate()) return '';
  return html`${s.enabled
    ? html`<button class="small" data-action="disable" onClick=${() => setEnabled(s, false)}
        aria-label=${`Disable schedule ${s.name}`}>Disable</button>`
    : html`<button class="small alt" data-action="enable" onClick=${() => setEnabled(s, true)}
        aria-label=${`Enable schedule ${s.name}`}>Enable</button>`}
    ${' '}<button class="small" data-action="delete" onClick=${() => remove(s)}
      aria-label=${`Delete schedule ${s.name}`}>Delete</button>`;
}

function Row({ s }) {
  const cmd = s.job ? [s.job.command, ...(s.job.args || [])].join(' ') : '';
  return html`<tr data-schedule=${s.id} data-name=${s.name}>
    <td><strong>${s.name}</strong><br /><small class="cmd"><code title=${cmd}>${cmd}</code></small></td>
    <td><code>${s.cron}</code><br /><small class="muted">${s.timezone}</small></td>
    <td>${s.queue ?? html`<span class="empty">none</span>`}</td>
    <td><span class=${`status ${s.enabled ? 'q-active' : 'q-paused'}`}
      data-enabled=${String(s.enabled)}>${s.enabled ? 'enabled' : 'disabled'}</span></td>
    <td data-next=${s.next_run_at || ''}>${s.next_run_at
      ? html`<time datetime=${s.next_run_at}>${localTime(s.next_run_at)}</time>
          <br /><small class="muted">${until(s.next_run_at, now.value)}</small>
          <${NextRuns} s=${s} />`
      : html`<span class="empty">none (disabled)</span>`}</td>
    <td data-last><${LastFiring} f=${s.last_firing} /></td>
    <td><small>missed: ${s.missed_policy.replace('_', ' ')}<br />
      overlap: ${s.overlap_policy.replace('_', ' ')}</small></td>
    <td class="acts"><${Actions} s=${s} /></td>
  </tr>`;
}

let active = false;

export function SchedulesPage() {
  useEffect(() => {
    active = true;
    load(false);
    const off = onEvent(onScheduleEvent);
    const tick = setInterval(() => {
      now.value = Date.now();
    }, TICK_MS);
    return () => {
      active = false;
      off();
      clearInterval(tick);
      clearTimeout(rereadTimer);
      rereadTimer = null;
      clearTimeout(dueTimer);
      dueTimer = null;
    };
  }, []);
  return html`<section aria-labelledby="schedules-h">
    <h1 id="schedules-h">Schedules</h1>
    <p class="hint">Times are in your zone, ${viewerZone}; each cron expression is read in its
      schedule's zone.</p>
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap">
      <table class="schedules">
        <thead><tr>
          <th scope="col">Schedule</th><th scope="col">Cron</th><th scope="col">Queue</th>
          <th scope="col">State</th><th scope="col">Next run</th>
          <th scope="col">Last firing</th><th scope="col">Policies</th>
          <th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${schedules.value.map((s) => html`<${Row} key=${s.id} s=${s} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && schedules.value.length === 0 &&
      html`<p class="empty">No schedules. <code>POST /api/v1/schedules</code> makes one.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
  </section>`;
}
