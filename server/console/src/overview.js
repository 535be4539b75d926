/* overview.js: the landing page: tiles (running, queued, succeeded and failed in the last
 * hour, agents online) and two uPlot charts of the last hour (throughput, queue wait), all
 * from one read of GET /api/v1/stats/jobs. A tenant's page re-reads on the event stream's
 * job and agent events, at most once every 2 s; the charts are also re-read once a minute
 * so that their time axis moves when nothing happens. A platform operator has no event
 * stream (it is per tenant): the page re-reads every 15 s. No list is polled. */
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import { signal } from '@preact/signals';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, onEvent, session } from './api.js';
import { duration, localTime } from './jobs.js';

const WINDOW_S = 3600;
const STEP_S = 60;
const EVENT_MIN_MS = 2000;
const CHART_MS = 60000;
const PLATFORM_MS = 15000;
const CHART_H = 200;

const stats = signal(null);
const error = signal(null);

let timer = null;
let lastRead = 0;
let reading = false;

async function load() {
  /* A read asked for while one is under way follows it: what it was asked for may have
   * happened after the first read's snapshot. */
  if (reading) {
    soon();
    return;
  }
  reading = true;
  lastRead = Date.now();
  const who = session.value;
  try {
    const got = await api('GET', `/api/v1/stats/jobs?window=${WINDOW_S}&step=${STEP_S}`);
    /* An answer that arrives after sign-out is not shown to the next session. */
    if (session.value !== who) return;
    stats.value = got;
    error.value = null;
  } catch (e) {
    error.value = e.message;
  } finally {
    reading = false;
  }
}

/* A burst of events makes one read, no sooner than EVENT_MIN_MS after the last one. */
function soon() {
  if (timer) return;
  const wait = Math.max(250, lastRead + EVENT_MIN_MS - Date.now());
  timer = setTimeout(() => {
    timer = null;
    load();
  }, wait);
}

function onOverviewEvent(ev) {
  if (ev.type === 'job.output') return; /* output, not a change of the figures */
  if (ev.type === 'resync' || ev.type.startsWith('job.') || ev.type.startsWith('agent.')) soon();
}

/* The buckets' start times (s since the epoch, what uPlot's time axis takes). */
function times(s) {
  const from = Date.parse(s.from) / 1000;
  return s.submitted.map((_, i) => from + i * s.step);
}

const JOBS = ['job', 'jobs'];
const AGENTS = ['agent', 'agents'];
const count = (n) => `${n} ${n === 1 ? 'job' : 'jobs'}`;
const waitMs = (v) => (v == null ? '–' : duration(v));
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

const CHARTS = {
  throughput: {
    title: 'Throughput',
    unit: 'jobs per minute',
    series: [
      { key: 'submitted', label: 'Submitted', stroke: '#1858b8' },
      { key: 'succeeded', label: 'Succeeded', stroke: '#17753a' },
      { key: 'failed', label: 'Failed or dead', stroke: '#b3261e' },
    ],
    fmt: (v) => (v == null ? '–' : String(v)),
  },
  wait: {
    title: 'Queue wait',
    unit: 'from submission to first assignment',
    series: [
      { key: 'wait_p50_ms', label: 'p50', stroke: '#1858b8' },
      { key: 'wait_p95_ms', label: 'p95', stroke: '#8a5a00' },
    ],
    fmt: waitMs,
  },
};

function waits(s) {
  const p95 = s.wait_p95_ms.filter((v) => v != null);
  return p95.length ? `last hour: ${p95.length} ${p95.length === 1 ? 'minute' : 'minutes'} with ` +
    `first assignments, the highest p95 wait ${waitMs(Math.max(...p95))}`
    : 'last hour: no job was assigned';
}

function Chart({ kind }) {
  const c = CHARTS[kind];
  const box = useRef(null);
  const plot = useRef(null);
  const s = stats.value;
  useEffect(() => {
    const el = box.current;
    const u = new uPlot(
      {
        width: Math.max(el.clientWidth, 200),
        height: CHART_H,
        series: [{ label: 'Minute', value: (_, v) => (v == null ? '–' : clock.format(new Date(v * 1000))) },
          ...c.series.map((x) => ({
            label: x.label, stroke: x.stroke, width: 2, spanGaps: false,
            /* A wait is a point per minute that had one: lone points must show. */
            points: { show: kind === 'wait', size: 6, fill: x.stroke },
            value: (_, v) => c.fmt(v),
          }))],
        axes: [{ values: (_, ticks) => ticks.map((t) => clock.format(new Date(t * 1000))) },
          { values: (_, ticks) => ticks.map(c.fmt), size: 60 }],
        scales: { y: { range: (_, lo, hi) => [0, Math.max(hi * 1.15, kind === 'wait' ? 10 : 1)] } },
        cursor: { drag: { x: false, y: false } },
      },
      [[]],
      el,
    );
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 200), height: CHART_H }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [kind]);
  useEffect(() => {
    if (plot.current && s) plot.current.setData([times(s), ...c.series.map((x) => s[x.key])]);
  }, [s, kind]);
  /* The text alternative: a summary, and the minutes that had anything in a table. */
  const rows = s ? times(s).map((t, i) => ({ t, v: c.series.map((x) => s[x.key][i]) }))
    .filter((r) => r.v.some((v) => v)).reverse() : [];
  const summary = !s ? 'loading' : kind === 'throughput'
    ? `last hour: ${count(s.totals.submitted)} submitted, ${s.totals.succeeded} succeeded, ` +
      `${s.totals.failed} failed or dead`
    : waits(s);
  return html`<figure class="chart" data-chart=${kind} aria-labelledby=${`${kind}-cap`}>
    <figcaption id=${`${kind}-cap`}><strong>${c.title}</strong> <span class="muted">(${c.unit}, last
      hour)</span></figcaption>
    <div class="plot" ref=${box} role="img" tabindex="0" aria-label=${`${c.title}, ${summary}`}
      data-points=${rows.length}></div>
    <details>
      <summary>${c.title} as a table</summary>
      ${rows.length === 0 ? html`<p class="empty">Nothing in the last hour.</p>` : html`<div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Minute</th>
            ${c.series.map((x) => html`<th scope="col">${x.label}</th>`)}</tr></thead>
          <tbody>${rows.map((r) => html`<tr><td>${clock.format(new Date(r.t * 1000))}</td>
            ${r.v.map((v) => html`<td class="num">${c.fmt(v)}</td>`)}</tr>`)}</tbody>
        </table></div>`}
    </details>
  </figure>`;
}

/* unit: [one, many]. */
function Tile({ name, label, value, unit, bad }) {
  return html`<div class=${`tile${bad && value > 0 ? ' bad' : ''}`} data-tile=${name}>
    <span class="tile-label">${label}</span>
    <span class="tile-value"><data value=${value ?? ''}>${value ?? '…'}</data>
      <small> ${value === 1 ? unit[0] : unit[1]}</small></span>
  </div>`;
}

export function OverviewPage() {
  const s = stats.value;
  const t = s && s.totals;
  const platform = !(session.value && session.value.tenant_id);
  useEffect(() => {
    load();
    const off = onEvent(onOverviewEvent);
    const every = setInterval(soon, platform ? PLATFORM_MS : CHART_MS);
    return () => {
      off();
      clearInterval(every);
      clearTimeout(timer);
      timer = null;
      /* Not shown to the next session of this tab (another key may sign in). */
      stats.value = null;
    };
  }, [platform]);
  return html`<section aria-labelledby="overview-h" class="overview">
    <h1 id="overview-h">Overview</h1>
    <p class="muted">${platform ? 'The whole platform' : 'This tenant'}
      ${s && html`, from ${localTime(s.from)} to ${localTime(s.to)}`}</p>
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="tiles" role="group" aria-label="Now and in the last hour">
      <${Tile} name="running" label="Running" value=${t && t.running} unit=${JOBS} />
      <${Tile} name="queued" label="Queued" value=${t && t.queued} unit=${JOBS} />
      <${Tile} name="succeeded" label="Succeeded, last hour" value=${t && t.succeeded} unit=${JOBS} />
      <${Tile} name="failed" label="Failed, last hour" value=${t && t.failed} unit=${JOBS} bad />
      <${Tile} name="agents" label="Agents online" value=${t && t.agents_online} unit=${AGENTS} />
    </div>
    <div class="charts">
      <${Chart} kind="throughput" />
      <${Chart} kind="wait" />
    </div>
  </section>`;
}
