/* deployments.js: the deployments page (#/deployments, #/deployments/<id>): the tenant's
 * package deployments newest first (GET /api/v1/packages/deployments, cursor paged), each
 * with its status and its targets' counts as a bar; one deployment's targets with their
 * state, reason and attempts (GET .../{id}/targets, paged); deploy a version to a label
 * set (POST) and cancel (DELETE), for operators and admins. Live: the stream's
 * deployment.created, deployment.progress and deployment.cancelled events (sql/0026) make
 * the page read again the one deployment they name (and its targets when it is open),
 * coalesced per deployment; never a timer. docs/console.md, "The deployments page". */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, canOperate, onEvent } from './api.js';
import { bytes } from './agents.js';
import { localTime } from './jobs.js';
import { loadPaged, pageQuery } from './ui.js';

const PAGE = 50; /* deployments a page */
const TARGETS_PAGE = 100; /* targets shown at first ("More agents") */
const COALESCE_MS = 250; /* events of one deployment within this are one read */
const STATES = ['cached', 'failed', 'fetching', 'pending', 'cancelled'];
const MAX_LABELS = 32;

const list = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const readAt = signal(null);
const state = { list, cursor, loading, error, readAt };
/* The open deployment's targets: { id, items, cursor, err, loading } or null. */
const targets = signal(null);
/* The id of #/deployments/<id> when the API says there is no such deployment (404). */
const missing = signal(null);
let openId = null;

const enc = encodeURIComponent;
const base = '/api/v1/packages/deployments';

function load(more) {
  return loadPaged(state, (c) => api('GET', `${base}?${pageQuery(PAGE, c)}`), more);
}

/* Puts d in the list in its place (replacing the row of the same id, or first if new). */
function put(d) {
  const i = list.value.findIndex((x) => x.id === d.id);
  list.value = i < 0 ? [d, ...list.value] : list.value.map((x) => (x.id === d.id ? d : x));
}

async function loadTargets(id, more) {
  const t = targets.value && targets.value.id === id ? targets.value : { id, items: [] };
  targets.value = { ...t, loading: true, err: null };
  try {
    /* Read again, keep as many rows as were shown (so a live update does not shrink them). */
    const limit = more ? TARGETS_PAGE : Math.max(TARGETS_PAGE, Math.min(1000, t.items.length));
    const page = await api('GET', `${base}/${enc(id)}/targets?${pageQuery(limit, more ? t.cursor : null)}`);
    if (openId !== id) return;
    targets.value = { id, items: more ? [...t.items, ...page.items] : page.items,
      cursor: page.next_cursor || null, loading: false, err: null };
  } catch (e) {
    if (openId === id) targets.value = { ...t, loading: false, err: e.message };
  }
}

async function loadOne(id) {
  try {
    put(await api('GET', `${base}/${enc(id)}`));
  } catch (e) {
    if (e.status !== 404) error.value = e.message;
    else {
      list.value = list.value.filter((x) => x.id !== id);
      if (openId === id) missing.value = id;
    }
    return;
  }
  if (openId === id) await loadTargets(id, false);
}

/* Events name a deployment; each is read again once per COALESCE_MS however many came. */
const pending = new Map();
function changed(id) {
  if (!id || pending.has(id)) return;
  pending.set(id, setTimeout(() => {
    pending.delete(id);
    loadOne(id);
  }, COALESCE_MS));
}

/* "role=web, zone=eu-1" -> {role: 'web', zone: 'eu-1'}, or throws with what is wrong. */
export function parseLabels(text) {
  const labels = {};
  const parts = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (!parts.length) throw new Error('give at least one label, as name=value');
  if (parts.length > MAX_LABELS) throw new Error(`at most ${MAX_LABELS} labels`);
  for (const p of parts) {
    const i = p.indexOf('=');
    if (i <= 0) throw new Error(`"${p}" is not name=value`);
    const k = p.slice(0, i).trim();
    if (k in labels) throw new Error(`label ${k} is given twice`);
    labels[k] = p.slice(i + 1).trim();
  }
  return labels;
}

/* The form's field a problem names: labels.<name> is the labels field. */
function fieldOf(err) {
  const f = (err.problem && err.problem.field) || '';
  if (f.startsWith('labels')) return 'labels';
  return ['package', 'max_parallel', 'spread_ms'].includes(f) ? f : 'form';
}

function Deploy() {
  const [v, setV] = useState({ package: '', labels: '', max_parallel: '20', spread_ms: '2000' });
  const [fieldErr, setFieldErr] = useState({});
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const set = (k) => (e) => setV({ ...v, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    setMsg(null);
    setFieldErr({});
    let labels;
    try {
      labels = parseLabels(v.labels);
    } catch (x) {
      setFieldErr({ labels: x.message });
      return;
    }
    setBusy(true);
    try {
      const d = await api('POST', base, { package: v.package.trim(), labels,
        max_parallel: Number(v.max_parallel), spread_ms: Number(v.spread_ms) });
      put(d);
      setMsg(`Deploying ${d.name} ${d.version} to ${d.counts.total} agent${d.counts.total === 1 ? '' : 's'}`);
      setV({ ...v, package: '' });
    } catch (x) {
      setFieldErr({ [fieldOf(x)]: x.message });
    } finally {
      setBusy(false);
    }
  };
  const field = (k) => ({
    'aria-invalid': fieldErr[k] ? 'true' : undefined,
    'aria-describedby': fieldErr[k] ? `dep-err-${k}` : undefined,
  });
  const errOf = (k) => fieldErr[k] && html`<span class="err field-err" id=${`dep-err-${k}`}
    data-field-error=${k} role="alert">${fieldErr[k]}</span>`;
  return html`<form class="submit deploy" onSubmit=${submit} aria-label="Deploy a version">
    <label>Package <input name="dep-package" required maxlength="300" value=${v.package}
      onInput=${set('package')} placeholder="tool@latest" size="18" ...${field('package')} />${errOf('package')}</label>
    <label>To agents labelled <input name="dep-labels" required maxlength="4096" value=${v.labels}
      onInput=${set('labels')} placeholder="role=web, zone=eu-1" size="20" ...${field('labels')} />${errOf('labels')}</label>
    <label>At most fetching <input name="dep-parallel" type="number" min="1" max="1000" required
      value=${v.max_parallel} onInput=${set('max_parallel')} size="5" ...${field('max_parallel')} />${errOf('max_parallel')}</label>
    <label>Spread (ms) <input name="dep-spread" type="number" min="0" max="600000" required
      value=${v.spread_ms} onInput=${set('spread_ms')} size="7" ...${field('spread_ms')} />${errOf('spread_ms')}</label>
    <button type="submit" disabled=${busy}>Deploy</button>
    ${errOf('form')}
    ${msg && html`<p role="status" class="ok" id="deploy-msg">${msg}</p>`}
  </form>`;
}

/* The targets' counts as one bar, a segment a state, with the figures in words beside it. */
function Progress({ d }) {
  const c = d.counts;
  const total = c.total || 1;
  const words = STATES.filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(', ');
  return html`<div class="dep-progress">
    <div class="bar stacked" role="img" aria-label=${`${words} of ${c.total}`}>
      ${STATES.filter((s) => c[s]).map((s) => html`<div class=${`seg s-${s}`}
        style=${{ width: `${(100 * c[s]) / total}%` }}></div>`)}
    </div>
    <span class="small" data-counts=${STATES.map((s) => `${s}=${c[s] || 0}`).join(' ')}>${words} of ${c.total}</span>
  </div>`;
}

async function cancel(d) {
  if (!confirm(`Cancel the deployment of ${d.name} ${d.version}? Agents not yet fetching will ` +
      'not fetch it; those fetching finish.'))
    return;
  try {
    put(await api('DELETE', `${base}/${enc(d.id)}`));
  } catch (e) {
    error.value = `Not cancelled: ${e.message}`;
  }
}

function Labels({ labels }) {
  return Object.entries(labels || {}).map(([k, v]) => html`<span class="tag">${k}=${v}</span> `);
}

function Row({ d }) {
  return html`<tr data-deployment=${d.id} data-status=${d.status}>
    <td><a href=${`#/deployments/${enc(d.id)}`}><strong>${d.name}</strong> ${d.version}</a>
      <div class="muted small"><code>${d.package}</code></div></td>
    <td><${Labels} labels=${d.labels} /></td>
    <td><span class=${`status st-${d.status}`} data-status-text>${d.status}</span></td>
    <td><${Progress} d=${d} /></td>
    <td class="num">${bytes(d.size_bytes)}</td>
    <td><time datetime=${d.created_at}>${localTime(d.created_at)}</time></td>
    <td class="acts">${canOperate() && d.status === 'running' && html`<button class="small"
      data-action="cancel" onClick=${() => cancel(d)}
      aria-label=${`Cancel the deployment of ${d.name} ${d.version}`}>Cancel</button>`}</td>
  </tr>`;
}

function Targets({ d }) {
  const t = targets.value;
  if (!t || t.id !== d.id) return null;
  return html`<section class="dep-targets" aria-labelledby="dep-targets-h">
    <h2 id="dep-targets-h">Agents of ${d.name} ${d.version}</h2>
    <p class="muted small">Max ${d.max_parallel} fetching at once, each after a random delay
      of up to ${d.spread_ms} ms. Targets are the agents that matched the labels when it was
      created.</p>
    ${t.err && html`<p class="err" role="alert">${t.err}</p>`}
    <div class="table-wrap"><table class="targets">
      <thead><tr><th scope="col">Agent</th><th scope="col">State</th><th scope="col">Reason</th>
        <th scope="col">Attempts</th><th scope="col">Started</th><th scope="col">Finished</th></tr></thead>
      <tbody>${t.items.map((x) => html`<tr key=${x.agent_id} data-target=${x.agent_id} data-state=${x.state}>
        <td>${x.agent_name || x.agent_id}</td>
        <td><span class=${`status st-${x.state}`}>${x.state}</span></td>
        <td>${x.reason || html`<span class="empty">—</span>`}</td>
        <td class="num">${x.attempts}</td>
        <td>${x.started_at ? html`<time datetime=${x.started_at}>${localTime(x.started_at)}</time>` : ''}</td>
        <td>${x.finished_at ? html`<time datetime=${x.finished_at}>${localTime(x.finished_at)}</time>` : ''}</td>
      </tr>`)}</tbody>
    </table></div>
    ${t.cursor && html`<button class="small plain" onClick=${() => loadTargets(d.id, true)}
      disabled=${t.loading}>More agents</button>`}
  </section>`;
}

function idOf(arg) {
  try {
    return arg ? decodeURIComponent(arg) : null;
  } catch (e) {
    return arg; /* not %-encoded properly: the API says it is not an id */
  }
}

export function DeploymentsPage({ arg }) {
  openId = idOf(arg);
  useEffect(() => {
    targets.value = null;
    missing.value = null;
    (async () => {
      await load(false);
      if (openId && !list.value.some((x) => x.id === openId)) await loadOne(openId);
      else if (openId) await loadTargets(openId, false);
    })();
    const off = onEvent((ev) => {
      if (ev.type === 'resync') load(false).then(() => openId && loadTargets(openId, false));
      else if (ev.type.startsWith('deployment.')) changed(ev.data.data && ev.data.data.deployment_id);
    });
    return () => {
      off();
      for (const t of pending.values()) clearTimeout(t);
      pending.clear();
    };
  }, [arg]);
  const open = openId && list.value.find((x) => x.id === openId);
  return html`<section aria-labelledby="deployments-h">
    <h1 id="deployments-h">Deployments</h1>
    <p class="muted">A deployment fetches one package version into the cache of every agent
      matching a label set, ahead of any job. See also <a href="#/packages">Packages</a>.</p>
    ${canOperate() && html`<${Deploy} />`}
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    ${openId && html`<p><a href="#/deployments">← All deployments</a></p>`}
    ${openId && missing.value === openId && html`<p class="empty" id="no-deployment">There is no
      deployment with this id.</p>`}
    <div class="table-wrap"><table class="deployments">
      <thead><tr><th scope="col">Package</th><th scope="col">Labels</th><th scope="col">Status</th>
        <th scope="col">Progress</th><th scope="col">Size</th><th scope="col">Created</th>
        <th scope="col"><span class="sr">Actions</span></th></tr></thead>
      <tbody>${(open ? [open] : list.value).map((d) => html`<${Row} key=${d.id} d=${d} />`)}</tbody>
    </table></div>
    ${!loading.value && list.value.length === 0 && html`<p class="empty" id="no-deployments">No
      deployments yet.</p>`}
    ${open && html`<${Targets} d=${open} />`}
    ${!open && cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      More deployments</button>`}
    <p class="muted read-at">Read at ${readAt.value ? localTime(readAt.value) : '…'}; updated live.</p>
  </section>`;
}
