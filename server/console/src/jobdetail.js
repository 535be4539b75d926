/* jobdetail.js: one job (#/jobs/<id>): its state timeline, why it is waiting, its result,
 * cancel and retry (with the job it retries and its retries), and its output. The output is
 * read from its tail (GET .../logs' X-End-Offset), only the lines in view are in the page
 * (a window over a fixed line height), and it is followed while the job runs: the event
 * stream's job.output (the stream's new end) says when there is more to read, so nothing
 * polls while the stream is up. The API has no history of attempts beyond the job's
 * `attempt`/`epoch` and each epoch's logs, so none is shown. */
import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, canOperate, liveState, onEvent, session, signOut } from './api.js';
import { duration, localTime } from './jobs.js';

const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'dead']);
const TAIL_BYTES = 256 * 1024; /* read first: ~4,000 lines of 64 bytes */
const CHUNK = 1024 * 1024; /* the API's largest limit_bytes */
const MAX_LINES = 200000; /* kept in memory; the oldest go first (the raw file has all) */
const LINE_PX = 18; /* must match .log-line's height in style.css */
const MARGIN = 30; /* rows rendered above and below the view */
/* Only while the event stream is down (its job.output events are missed): a slow read. */
const FALLBACK_MS = 5000;
/* After a job.output event: one more read, for the rest of its 250 ms interval. */
const TRAIL_MS = 500;

/* One read of the log API with the session's token: {bytes, next, end, epoch, dropped,
 * complete}. A 401 ends the session, as api() does. */
async function readLog(id, q) {
  const s = session.value;
  if (!s) throw new ApiError(401, { detail: 'not signed in' });
  const res = await fetch(`/api/v1/jobs/${id}/logs?${new URLSearchParams(q)}`, {
    headers: { Authorization: `Bearer ${s.token}` },
  });
  if (res.status === 401 && session.value === s) signOut('expired');
  if (!res.ok) {
    let p = null;
    try {
      p = await res.json();
    } catch (e) {
      /* no problem document */
    }
    throw new ApiError(res.status, p);
  }
  const h = (k) => Number(res.headers.get(k) || 0);
  return {
    bytes: new Uint8Array(await res.arrayBuffer()),
    next: h('X-Next-Offset'),
    end: h('X-End-Offset'),
    epoch: h('X-Epoch'),
    dropped: h('X-Dropped-Bytes'),
    complete: res.headers.get('X-Complete') === 'true',
  };
}

/* The lines of one stream of one attempt, read from the tail and then forward. Plain
 * object (not a signal): 200,000 lines must not be copied on every chunk; `version`
 * tells the view to draw again. `before` is the first byte read, `dropped` where the
 * stored bytes begin, and `head` the bytes from `before` to the first newline (`headOpen`
 * until that newline is read): the end of a line that began earlier, kept until "Load
 * earlier" reads its start. `want` is the epoch asked for (0: the latest), `epoch` the
 * one being read. */
function newLog(stream, epoch) {
  return { stream, want: epoch, lines: [], partial: '', offset: 0, skipped: 0, complete: false,
    epoch: 0,
    decoder: new TextDecoder(), before: 0, dropped: 0, head: new Uint8Array(0), headOpen: false,
    shift: 0 };
}

function concat(a, b) {
  const c = new Uint8Array(a.length + b.length);
  c.set(a);
  c.set(b, a.length);
  return c;
}

function append(log, bytes) {
  if (log.headOpen) {
    /* A newline byte (0x0a) is never inside a UTF-8 sequence: cut before decoding. */
    const nl = bytes.indexOf(10);
    log.head = concat(log.head, nl < 0 ? bytes : bytes.subarray(0, nl));
    if (nl < 0) return;
    log.headOpen = false;
    bytes = bytes.subarray(nl + 1);
  }
  const text = log.partial + log.decoder.decode(bytes, { stream: true });
  const parts = text.split('\n');
  log.partial = parts.pop();
  for (const p of parts) log.lines.push(p);
  if (log.lines.length > MAX_LINES) {
    const n = log.lines.length - MAX_LINES;
    log.lines.splice(0, n);
    log.skipped += n;
  }
}

/* Puts the TAIL_BYTES before what is shown above it, joined to the line cut at `before`. */
async function loadEarlier(id, log) {
  const start = Math.max(log.dropped, log.before - TAIL_BYTES);
  const r = await readLog(id, { stream: log.stream, epoch: String(log.epoch),
    offset: String(start), limit_bytes: String(log.before - start) });
  let bytes = concat(r.bytes, log.head);
  let head = new Uint8Array(0);
  if (start > log.dropped) {
    const nl = bytes.indexOf(10);
    head = nl < 0 ? bytes : bytes.slice(0, nl);
    bytes = nl < 0 ? new Uint8Array(0) : bytes.subarray(nl + 1);
  }
  const parts = bytes.length ? new TextDecoder().decode(bytes).split('\n') : [];
  log.lines = parts.concat(log.lines);
  log.head = head;
  log.before = start;
  log.shift += parts.length;
}

function size(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/* The job's events' statuses as this page saw them arrive, with the time. */
function Timeline({ j, seen }) {
  const items = [['submitted', j.created_at,
    `${j.queue ? `queue ${j.queue}` : 'no queue'}, priority ${j.priority}`]];
  if (j.not_before && j.status === 'queued' && Date.parse(j.not_before) > Date.parse(j.created_at))
    items.push(['not before', j.not_before, 'the retry backoff of a failed attempt']);
  if (j.started_at)
    items.push(['started', j.started_at,
      `attempt ${j.attempt} of ${j.max_attempts}, epoch ${j.epoch}` +
      (j.agent_id ? `, agent ${j.agent_id}` : '')]);
  if (j.finished_at) items.push([j.status, j.finished_at, j.error || '']);
  /* What the document already dates is not repeated; the rest (assigned, a retry's
   * queued) is only known from the events this page saw. */
  const dated = (st) => (st === 'queued' && j.attempt === 0) ||
    (st === 'running' && j.started_at) || (st === j.status && j.finished_at);
  for (const s of seen) if (!dated(s.status)) items.push([s.status, s.at, 'seen live']);
  items.sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
  const ran = j.started_at
    ? (j.finished_at ? Date.parse(j.finished_at) : Date.now()) - Date.parse(j.started_at)
    : null;
  return html`<section aria-labelledby="tl-h" class="panel">
    <h2 id="tl-h">Timeline</h2>
    <p>Attempt <strong>${j.attempt}</strong> of ${j.max_attempts} · epoch ${j.epoch}
      ${ran != null ? html` · ran ${duration(ran)}` : ''}</p>
    <ol class="timeline">
      ${items.map(([what, at, note]) => html`<li data-event=${what}>
        <span class=${`status s-${what}`}>${what}</span>
        <time datetime=${at}>${localTime(at)}</time> <small>${note}</small></li>`)}
    </ol>
  </section>`;
}

function Waiting({ w, reload }) {
  if (!w) return null;
  const nums = [];
  if (w.position) nums.push(`${w.position} of the tenant's jobs ahead`);
  if (w.agents_considered != null)
    nums.push(`${w.agents_matching ?? 0} of ${w.agents_considered} agents match`);
  if (w.slots) nums.push(`${w.slots_in_use} of ${w.slots} slots in use`);
  if (w.tenant && w.tenant.quota != null)
    nums.push(`${w.tenant.running} of ${w.tenant.quota} concurrent jobs (quota)`);
  if (w.queue && w.queue.max_running != null)
    nums.push(`queue: ${w.queue.running} of ${w.queue.max_running} running`);
  if (w.not_before) nums.push(`not before ${localTime(w.not_before)}`);
  return html`<section aria-labelledby="wait-h" class="panel waiting" id="waiting">
    <h2 id="wait-h">Why is it waiting?</h2>
    <p><strong data-reason=${w.reason}>${w.reason.replace(/_/g, ' ')}</strong>: ${w.detail}</p>
    ${w.blocked_by && w.blocked_by.length > 1 &&
      html`<p>Also held by: ${
        w.blocked_by.slice(1).map((b) => b.replace(/_/g, ' ')).join(', ')}</p>`}
    ${nums.length > 0 && html`<ul>${nums.map((n) => html`<li>${n}</li>`)}</ul>`}
    ${w.requirements && w.requirements.length > 0 && html`<table>
      <thead><tr><th scope="col">Requirement</th><th scope="col">Wanted</th>
        <th scope="col">Agents failing</th></tr></thead>
      <tbody>${w.requirements.map((r) => html`<tr><td>${r.key}</td><td>${String(r.wanted)}</td>
        <td class="num">${r.agents_failing}</td></tr>`)}</tbody></table>`}
    <button class="small plain" onClick=${reload}>Ask again</button>
  </section>`;
}

function Result({ j }) {
  if (!ENDED.has(j.status)) return null;
  return html`<section aria-labelledby="res-h" class="panel">
    <h2 id="res-h">Result</h2>
    <dl class="kv">
      <dt>Status</dt>
      <dd><span class=${`status s-${j.status}`} id="final-status">${j.status}</span></dd>
      <dt>Exit code</dt><dd id="exit-code">${j.exit_code ?? '—'}</dd>
      ${j.error && html`<dt>Error</dt><dd class="err">${j.error}</dd>`}
    </dl>
    ${j.result != null && html`<pre class="result">${JSON.stringify(j.result, null, 2)}</pre>`}
  </section>`;
}

/* Only the rows in view (plus MARGIN) are elements; the spacer gives the scroll height. */
function LogView({ log, version }) {
  const box = useRef(null);
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(400);
  const follow = useRef(true);
  const n = log.lines.length + (log.partial ? 1 : 0);
  useEffect(() => {
    const el = box.current;
    setHeight(el.clientHeight);
    if (log.shift) {
      /* Lines put above: the same lines stay in view. */
      el.scrollTop += log.shift * LINE_PX;
      log.shift = 0;
      setTop(el.scrollTop);
    } else if (follow.current) {
      el.scrollTop = el.scrollHeight;
      setTop(el.scrollTop);
    }
  }, [version]);
  const onScroll = (e) => {
    const el = e.currentTarget;
    follow.current = el.scrollTop + el.clientHeight >= el.scrollHeight - LINE_PX;
    setTop(el.scrollTop);
  };
  const first = Math.max(0, Math.floor(top / LINE_PX) - MARGIN);
  const last = Math.min(n, Math.ceil((top + height) / LINE_PX) + MARGIN);
  const rows = [];
  for (let i = first; i < last; i++) {
    const t = i < log.lines.length ? log.lines[i] : log.partial;
    rows.push(html`<div class="log-line" key=${i}>${t}</div>`);
  }
  return html`<div class="log" ref=${box} onScroll=${onScroll} tabindex="0" id="log"
      role="log" aria-label="Job output" data-lines=${n}>
    <div style=${{ height: `${n * LINE_PX}px`, position: 'relative' }}>
      <div style=${{ transform: `translateY(${first * LINE_PX}px)` }}>${rows}</div>
    </div>
  </div>`;
}

/* Every stored byte of the stream, read with the token (it is in memory only, so a plain
 * link could not carry it), saved as a file. */
async function download(id, stream, epoch) {
  const parts = [];
  let off = 0;
  for (;;) {
    const r = await readLog(id, { stream, epoch: String(epoch), offset: String(off),
      limit_bytes: String(CHUNK) });
    if (!r.bytes.length) break;
    parts.push(r.bytes);
    off = r.next;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: 'text/plain' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `job-${id.slice(0, 8)}-${epoch}-${stream}.log`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function Output({ j }) {
  const [stream, setStream] = useState('stdout');
  const [epoch, setEpoch] = useState(0); /* 0: the latest */
  const [version, setVersion] = useState(0);
  const [err, setErr] = useState(null);
  const logRef = useRef(null);
  const busy = useRef(false);
  const again = useRef(false);
  const running = !ENDED.has(j.status) && j.status !== 'queued';

  /* Read what is new since the last offset; the first read starts at the tail. What to
   * read is the log's own (not this render's), so a late call reads the current log. */
  const pull = async () => {
    if (busy.current) {
      again.current = true;
      return;
    }
    busy.current = true;
    const log = logRef.current;
    try {
      const q = { stream: log.stream };
      if (log.want) q.epoch = String(log.want);
      if (!log.epoch) {
        const probe = await readLog(j.id, { ...q, limit_bytes: '1' });
        if (!probe.epoch) return; /* never assigned: nothing to read yet */
        log.epoch = probe.epoch;
        log.dropped = probe.dropped;
        log.offset = Math.max(probe.dropped, probe.end - TAIL_BYTES);
        log.before = log.offset;
        log.headOpen = log.offset > probe.dropped;
      }
      q.epoch = String(log.epoch);
      for (;;) {
        const r = await readLog(j.id, { ...q, offset: String(log.offset),
          limit_bytes: String(CHUNK) });
        log.complete = r.complete;
        if (logRef.current !== log) return;
        if (!r.bytes.length) break;
        append(log, r.bytes);
        log.offset = r.next;
        setVersion((v) => v + 1);
        if (r.next >= r.end) break;
      }
      setErr(null);
    } catch (e) {
      setErr(e.message);
    } finally {
      busy.current = false;
      if (again.current) {
        again.current = false;
        pull();
      }
    }
  };

  /* A new stream or attempt starts over from its tail. */
  useEffect(() => {
    logRef.current = newLog(stream, epoch);
    setVersion((v) => v + 1);
    pull();
  }, [j.id, j.epoch, stream, epoch]);
  /* Every change of the job (its events) reads what is new. */
  useEffect(() => {
    pull();
  }, [j.updated_at, j.status, stream, epoch]);
  /* New output: the stream's job.output event carries its new end; read when it is past
   * what was read. An event is sent for the first chunk of each 250 ms of a stream, so one
   * more read TRAIL_MS after the last event picks up the chunks that followed it in its
   * interval (a job that then goes quiet sends no further event). */
  const trail = useRef(null);
  useEffect(() => {
    const off = onEvent((ev) => {
      const d = ev.data && ev.data.data;
      if (ev.type !== 'job.output' || !d || d.job_id !== j.id) return;
      const log = logRef.current;
      if (!log || d.stream !== log.stream) return;
      if (log.epoch && d.epoch !== log.epoch) return; /* another attempt than the one shown */
      if (!log.epoch || d.end_offset > log.offset) pull();
      clearTimeout(trail.current);
      trail.current = setTimeout(pull, TRAIL_MS);
    });
    return () => {
      off();
      clearTimeout(trail.current);
    };
  }, [j.id, stream, epoch]);
  /* The fallback: a slow read only while the stream is down and the job runs. */
  const live = liveState.value === 'live';
  useEffect(() => {
    if (!running || live) return undefined;
    const t = setInterval(pull, FALLBACK_MS);
    return () => clearInterval(t);
  }, [running, live, stream, epoch]);

  const log = logRef.current || newLog(stream, epoch);
  const epochs = [];
  for (let e = j.epoch; e >= 1; e--) epochs.push(e);
  return html`<section aria-labelledby="out-h" class="panel output">
    <h2 id="out-h">Output</h2>
    <div class="log-bar">
      <label>Stream <select name="stream" value=${stream}
          onChange=${(e) => setStream(e.target.value)}>
        <option value="stdout">stdout</option><option value="stderr">stderr</option>
        <option value="system">system</option></select></label>
      ${epochs.length > 1 && html`<label>Attempt (epoch) <select name="epoch" value=${epoch}
          onChange=${(e) => setEpoch(Number(e.target.value))}>
        <option value="0">latest</option>
        ${epochs.map((e) => html`<option value=${e}>${e}</option>`)}</select></label>`}
      <span class="muted" id="log-state">${log.complete ? 'complete' : running ? 'following' : ''}
        ${log.before > 0 ? ` · the first ${size(log.before)} are not shown` : ''}
        ${log.skipped > 0 ? ` · ${log.skipped} older lines dropped from view` : ''}</span>
      ${log.before > log.dropped && !log.headOpen && html`<button class="small plain" id="earlier"
        onClick=${() => loadEarlier(j.id, log).then(() => setVersion((v) => v + 1),
          (e) => setErr(e.message))}>Load earlier</button>`}
      <button class="small plain" id="download" disabled=${!log.epoch}
        onClick=${() => download(j.id, log.stream, log.epoch).catch((e) => setErr(e.message))}>
        Download raw</button>
    </div>
    ${err && html`<p class="err" role="alert">${err}</p>`}
    <${LogView} log=${log} version=${version} />
  </section>`;
}

/* The job's package: the reference as submitted (`report@latest`) and the exact version it
 * resolved to then (package_id, read once: GET /api/v1/packages/{id}), linked to that
 * package's page. A finished job whose version was since deleted has no package_id. */
function PackageRef({ j }) {
  const [p, setP] = useState(null);
  const [err, setErr] = useState(null);
  useEffect(() => {
    setP(null);
    setErr(null);
    if (!j.package_id) return;
    api('GET', `/api/v1/packages/${j.package_id}`).then(setP, (e) => setErr(e.message));
  }, [j.package_id]);
  if (!j.package && !j.package_id) return null;
  const name = p ? p.name : j.package && j.package.split('@')[0];
  return html`<p class="pkg-ref" id="package-ref">Package
    ${j.package && html` <code data-ref>${j.package}</code> →`}
    ${' '}${p ? html`<a href=${`#/packages/${encodeURIComponent(name)}`} data-resolved=${p.version}>
        ${p.name} <strong>${p.version}</strong></a>
        <small class="muted"> sha256 <code title=${p.sha256}>${p.sha256.slice(0, 12)}…</code></small>`
      : j.package_id ? html`<span class="muted">${err || 'reading…'}</span>`
      : html`<span class="muted" data-resolved="">the version has been deleted</span>`}
    ${!p && name && html` <a href=${`#/packages/${encodeURIComponent(name)}`}>the package</a>`}</p>`;
}

/* The job this one retries, and the jobs that retry it (GET /api/v1/jobs?retry_of=). */
function Retries({ j, retries }) {
  if (!j.retry_of && !retries.length) return null;
  return html`<p class="retries" id="retries">
    ${j.retry_of && html`Retry of <a href=${`#/jobs/${j.retry_of}`} id="retry-of"
      data-job=${j.retry_of}><code>${j.retry_of.slice(0, 8)}</code></a>. `}
    ${retries.length > 0 && html`Retried as ${retries.map((r, i) => html`${i ? ', ' : ''}<a
      href=${`#/jobs/${r.id}`} data-job=${r.id} class="retried-as"><code>${r.id.slice(0, 8)}</code></a>
      <span class=${`status s-${r.status}`}>${r.status}</span>`)}.`}
  </p>`;
}

export function JobPage({ arg }) {
  const [j, setJ] = useState(null);
  const [err, setErr] = useState(null);
  const [seen, setSeen] = useState([]);
  const [retries, setRetries] = useState([]);
  const load = async () => {
    try {
      const doc = await api('GET', `/api/v1/jobs/${arg}`);
      /* Only a finished job can have been retried: a running one costs no second read. */
      const r = ENDED.has(doc.status)
        ? await api('GET', `/api/v1/jobs?retry_of=${arg}&limit=10`) : { items: [] };
      setJ(doc);
      setRetries(r.items);
      setErr(null);
    } catch (e) {
      setErr(e.message);
    }
  };
  const retriesRef = useRef(retries);
  retriesRef.current = retries;
  useEffect(() => {
    setJ(null);
    setSeen([]);
    setRetries([]);
    load();
    return onEvent((ev) => {
      if (ev.type === 'resync') return load();
      const d = ev.data && ev.data.data;
      /* job.output is read by the output panel; a retry's events change its status here. */
      if (!d || ev.type === 'job.output') return undefined;
      if (d.job_id !== arg) {
        if (retriesRef.current.some((r) => r.id === d.job_id)) return load();
        return undefined;
      }
      const at = ev.data.created_at || new Date().toISOString();
      setSeen((s) => [...s, { status: d.status, at }]);
      return load();
    });
  }, [arg]);
  const cancel = async () => {
    try {
      setJ(await api('POST', `/api/v1/jobs/${arg}/cancel`));
    } catch (e) {
      setErr(e.message);
    }
  };
  /* The new job's own page: that is what runs now. */
  const retry = async () => {
    try {
      const n = await api('POST', `/api/v1/jobs/${arg}/retry`);
      location.hash = `#/jobs/${n.id}`;
    } catch (e) {
      setErr(e.message);
    }
  };
  if (!j)
    return html`<section><h1>Job <code>${arg.slice(0, 8)}</code></h1>
      ${err ? html`<p class="err" role="alert">${err}</p>` : html`<p class="muted">Loading…</p>`}
    </section>`;
  return html`<section aria-labelledby="job-h" class="job" data-job=${j.id}>
    <p><a href="#/jobs">← Jobs</a></p>
    <h1 id="job-h">Job <code class="id">${j.id}</code>
      <span class=${`status s-${j.status}`} data-status=${j.status}
        id="job-status">${j.status}</span>
      ${j.cancel_requested && !ENDED.has(j.status) ? html` <small>(cancelling)</small>` : ''}</h1>
    <p class="cmd"><code>${j.command || j.entrypoint}</code></p>
    <${PackageRef} j=${j} />
    <${Retries} j=${j} retries=${retries} />
    ${canOperate() && !ENDED.has(j.status) && !j.cancel_requested &&
      html`<p><button class="small" id="cancel" onClick=${cancel}>Cancel job</button></p>`}
    ${canOperate() && ENDED.has(j.status) &&
      html`<p><button class="small alt" id="retry" onClick=${retry}>Retry job</button>
        <small class="muted">runs it again as a new job</small></p>`}
    ${err && html`<p class="err" role="alert">${err}</p>`}
    <div class="job-grid">
      <${Timeline} j=${j} seen=${seen} />
      <${Waiting} w=${j.status === 'queued' ? j.waiting : null} reload=${load} />
      <${Result} j=${j} />
    </div>
    <${Output} j=${j} />
  </section>`;
}
