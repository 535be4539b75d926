/* quotas.js: the quotas and usage page: the caller's tenant (GET /api/v1/tenant: its tier,
 * effective quotas, the operator's overrides and live usage), each of the six quotas as use
 * against limit with a bar, marked in words and shape (not colour alone) at 80% and 100%.
 * Re-read when the stream says something changed (job, agent and queue events, a burst
 * making one read a second after its first event) and when the tab is shown again: no timer
 * polls. */
import { html } from 'htm/preact';
import { useEffect } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, onEvent } from './api.js';
import { bytes } from './agents.js';
import { localTime } from './jobs.js';

const REFRESH_DEBOUNCE_MS = 1000;
export const NEAR = 0.8;

const tenant = signal(null);
const readAt = signal(null);
const loading = signal(false);
const error = signal(null);

const count = (n) => new Intl.NumberFormat().format(n);

/* The six quotas: the member of `quotas` (and `overrides`), of `usage`, and how to write
 * a number of it. */
const QUOTAS = [
  { key: 'agents', label: 'Agents', use: 'agents', fmt: (n) => `${count(n)} ${n === 1 ? 'agent' : 'agents'}` },
  { key: 'concurrent_jobs', label: 'Concurrent jobs', use: 'concurrent_jobs',
    fmt: (n) => `${count(n)} ${n === 1 ? 'job' : 'jobs'}`, note: 'assigned or running now' },
  { key: 'schedules', label: 'Schedules', use: 'schedules', fmt: (n) => `${count(n)} ${n === 1 ? 'schedule' : 'schedules'}` },
  { key: 'queues', label: 'Queues', use: 'queues', fmt: (n) => `${count(n)} ${n === 1 ? 'queue' : 'queues'}` },
  { key: 'storage_bytes', label: 'Storage', use: 'storage_bytes', fmt: bytes,
    note: 'packages and job output' },
  { key: 'api_calls_per_day', label: 'API calls', use: 'api_calls_today',
    fmt: (n) => `${count(n)} ${n === 1 ? 'call' : 'calls'}`, per: ' per day' },
];

/* 'ok', 'near' (80% or more) or 'full' (the limit reached: creations are refused). */
export function level(used, limit) {
  if (limit <= 0) return 'full';
  const f = used / limit;
  return f >= 1 ? 'full' : f >= NEAR ? 'near' : 'ok';
}

/* The next 00:00 UTC, when the daily count starts again. */
export function nextUtcMidnight(now = new Date()) {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
}

async function load() {
  loading.value = true;
  try {
    tenant.value = await api('GET', '/api/v1/tenant');
    readAt.value = new Date();
    error.value = null;
  } catch (e) {
    error.value = e.message;
  } finally {
    loading.value = false;
  }
}

let timer = null;
function onQuotaEvent(ev) {
  if (ev.type === 'resync') {
    load();
    return;
  }
  if (!/^(job|agent|queue)\./.test(ev.type) || ev.type === 'job.output' || timer) return;
  /* A burst of events makes one read, a second after the first of them. */
  timer = setTimeout(() => {
    timer = null;
    load();
  }, REFRESH_DEBOUNCE_MS);
}

function onVisible() {
  if (document.visibilityState === 'visible') load();
}

const MARKS = {
  near: { sign: '▲', text: 'Near the limit' },
  full: { sign: '■', text: 'Limit reached' },
};

function Quota({ q, t }) {
  const limit = t.quotas[q.key];
  const used = t.usage[q.use] ?? 0;
  const lv = level(used, limit);
  const pct = limit > 0 ? Math.round((used / limit) * 100) : 100;
  const override = t.overrides && t.overrides[q.key] != null;
  /* "3 of 5 queues", "1.2 MiB of 20 GiB", "37 of 5,000 calls per day" */
  const text = `${q.key === 'storage_bytes' ? bytes(used) : count(used)} of ${q.fmt(limit)}${q.per || ''}`;
  const mark = MARKS[lv];
  return html`<li class=${`quota q-${lv}`} data-quota=${q.key} data-level=${lv}
      data-used=${used} data-limit=${limit}>
    <div class="quota-head">
      <strong id=${`quota-${q.key}`}>${q.label}</strong>
      ${override && html`<span class="tag override" data-override
        title="Set for this tenant by a platform operator, in place of the tier's value">override</span>`}
      <span class="quota-nums" data-text>${text}</span>
      <span class="quota-pct">${pct}%</span>
    </div>
    <div class="bar" role="meter" aria-labelledby=${`quota-${q.key}`} aria-valuemin="0"
      aria-valuemax=${limit} aria-valuenow=${Math.min(used, limit)}
      aria-valuetext=${`${text} (${pct}%)${mark ? `: ${mark.text.toLowerCase()}` : ''}`}>
      <div class="fill" style=${{ width: `${Math.min(pct, 100)}%` }}></div>
      <div class="tick" aria-hidden="true"></div>
    </div>
    ${mark && html`<p class="mark" data-mark=${lv}><span aria-hidden="true">${mark.sign}</span>
      ${mark.text}${lv === 'full' && q.key !== 'concurrent_jobs' && q.key !== 'api_calls_per_day'
        ? ': creating more is refused' : ''}</p>`}
    ${q.note && html`<p class="muted small">${q.note}${q.key === 'storage_bytes' && t.usage.job_log_bytes != null
      ? `, of which job output ${bytes(t.usage.job_log_bytes)}` : ''}</p>`}
    ${q.key === 'api_calls_per_day' && html`<${Reset} />`}
  </li>`;
}

function Reset() {
  const at = nextUtcMidnight(readAt.value || new Date());
  return html`<p class="muted small">Resets at <time id="calls-reset" datetime=${at.toISOString()}
    >${localTime(at.toISOString())}</time> your time (00:00 UTC); this page's reads count too.</p>`;
}

export function QuotasPage() {
  useEffect(() => {
    load();
    const off = onEvent(onQuotaEvent);
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      off();
      document.removeEventListener('visibilitychange', onVisible);
      clearTimeout(timer);
      timer = null;
    };
  }, []);
  const t = tenant.value;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return html`<section aria-labelledby="quotas-h" class="quotas">
    <h1 id="quotas-h">Quotas and usage</h1>
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    ${t && html`<p class="tier">
      <strong>${t.display_name}</strong> <code>${t.slug}</code> · tier${' '}<span class="tag" id="tier" data-tier=${t.tier}>${t.tier}</span>
      ${t.status !== 'active' && html` · <span class="err">${t.status}</span>`}
      ${t.rate_limit && html` · request rate ${count(t.rate_limit.per_second)} per second,
        bursts of ${count(t.rate_limit.burst)}`}
    </p>
    <ul class="quota-list">${QUOTAS.map((q) => html`<${Quota} key=${q.key} q=${q} t=${t} />`)}</ul>
    <p class="muted small" id="read-at">Read at ${localTime(readAt.value && readAt.value.toISOString())}
      ${' '}(${zone}); kept current by the live events.${' '}<button class="small alt" onClick=${() => load()} disabled=${loading.value}
        id="quotas-refresh">Read again</button></p>`}
  </section>`;
}
