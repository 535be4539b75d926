/* agents.js: the agents page: GET /api/v1/agents with its cursor, each agent's status, last
 * heartbeat, labels, facts, slots in use and cached packages; drain, disable, enable (operator
 * and admin) and revoke the credential (admin) through the same REST API; rows kept current by
 * the stream's agent.* events (no polling). */
import { html } from 'htm/preact';
import { useEffect } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, canOperate, onEvent, session } from './api.js';
import { localTime } from './jobs.js';
import { loadPaged, pageQuery } from './ui.js';

const PAGE = 50;
const agents = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);

/* Redraws the relative heartbeat times; a clock in the page, no request. */
const now = signal(Date.now());
const TICK_MS = 10000;

const isAdmin = () => session.value && session.value.role === 'admin';

/* "12 sec. ago", "3 min. ago": how long before `at` an instant was, for a heartbeat. */
const rel = new Intl.RelativeTimeFormat(undefined, { numeric: 'always', style: 'short' });
export function ago(iso, at = Date.now()) {
  if (!iso) return 'never';
  const s = Math.round((at - Date.parse(iso)) / 1000);
  if (s < 60) return rel.format(-Math.max(s, 0), 'second');
  if (s < 3600) return rel.format(-Math.floor(s / 60), 'minute');
  if (s < 86400) return rel.format(-Math.floor(s / 3600), 'hour');
  return rel.format(-Math.floor(s / 86400), 'day');
}

/* Bytes with a binary unit: 64 GiB. */
export function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[i]}`;
}

function load(more) {
  return loadPaged({ list: agents, cursor, loading, error },
    (c) => api('GET', `/api/v1/agents?${pageQuery(PAGE, c)}`), more);
}

function replace(a) {
  const k = agents.value.findIndex((x) => x.id === a.id);
  if (k < 0) return;
  const next = agents.value.slice();
  next[k] = a;
  agents.value = next;
}

/* The latest event per agent, so a slow read never puts an older status back. */
const latest = new Map();

/* An agent.<status> event: the row takes the status at once, then the rest from the agent. */
async function onAgentEvent(ev) {
  if (ev.type === 'resync') {
    load(false);
    return;
  }
  const d = ev.data && ev.data.data;
  if (!ev.type.startsWith('agent.') || !d || !d.agent_id) return;
  const seq = (latest.get(d.agent_id) || 0) + 1;
  latest.set(d.agent_id, seq);
  const i = agents.value.findIndex((a) => a.id === d.agent_id);
  if (i >= 0) replace({ ...agents.value[i], status: d.status });
  let a;
  try {
    a = await api('GET', `/api/v1/agents/${d.agent_id}`);
  } catch (e) {
    return;
  }
  if (latest.get(d.agent_id) !== seq) return;
  if (agents.value.some((x) => x.id === a.id)) replace(a);
  else if (!cursor.value) agents.value = [...agents.value, a]; /* oldest first: a new one is last */
}

async function act(a, verb) {
  if (verb === 'revoke-credential' &&
      !confirm(`Revoke the credential of ${a.name}? This cannot be undone: the host must enrol again.`))
    return;
  error.value = null;
  try {
    replace(await api('POST', `/api/v1/agents/${a.id}/${verb}`));
  } catch (e) {
    error.value = `${a.name}: ${e.message}`;
  }
}

function Labels({ obj }) {
  const e = Object.entries(obj || {});
  if (!e.length) return html`<span class="empty">none</span>`;
  return e.map(([k, v]) => html`<span class="tag">${k}=${String(v)}</span> `);
}

/* The facts the agent reported that exist: cores, memory, kernel, interpreters. */
function Facts({ c }) {
  if (!c) return '';
  const parts = [];
  if (c.cpus != null) parts.push(`${c.cpus} CPU`);
  if (c.memory_bytes != null) parts.push(bytes(c.memory_bytes));
  if (c.kernel) parts.push(c.kernel);
  if (Array.isArray(c.interpreters) && c.interpreters.length) parts.push(c.interpreters.join(' '));
  return parts.join(' · ');
}

function Actions({ a }) {
  if (!canOperate()) return '';
  const b = (verb, label, cls = 'small') => html`<button class=${cls} data-action=${verb}
    onClick=${() => act(a, verb)} aria-label=${`${label} ${a.name}`}>${label}</button> `;
  return html`${a.status !== 'draining' && a.status !== 'disabled' && b('drain', 'Drain', 'small alt')}
    ${a.status !== 'disabled' && b('disable', 'Disable')}
    ${(a.status === 'draining' || a.status === 'disabled') && b('enable', 'Enable', 'small alt')}
    ${isAdmin() && !a.credential_revoked && b('revoke-credential', 'Revoke')}`;
}

function Row({ a }) {
  return html`<tr data-agent=${a.id} data-name=${a.name}>
    <td><strong>${a.name}</strong><br /><small>${a.hostname} · ${a.os}/${a.arch} · ${a.version}</small></td>
    <td><span class=${`status a-${a.status}`} data-status=${a.status}>${a.status}</span>
      ${a.credential_revoked ? html` <small class="err">credential revoked</small>` : ''}</td>
    <td><time datetime=${a.last_heartbeat_at || ''}
      title=${a.last_heartbeat_at ? localTime(a.last_heartbeat_at) : ''}>${ago(a.last_heartbeat_at, now.value)}</time></td>
    <td class="num" data-slots>${a.running_jobs ?? 0} / ${a.slots}</td>
    <td class="num">${a.cached_packages ?? 0}</td>
    <td class="wrap"><${Labels} obj=${a.labels} /></td>
    <td class="wrap"><small><${Facts} c=${a.capabilities} /></small></td>
    <td class="acts"><${Actions} a=${a} /></td>
  </tr>`;
}

export function AgentsPage() {
  useEffect(() => {
    load(false);
    const off = onEvent(onAgentEvent);
    const tick = setInterval(() => {
      now.value = Date.now();
    }, TICK_MS);
    return () => {
      off();
      clearInterval(tick);
    };
  }, []);
  return html`<section aria-labelledby="agents-h">
    <h1 id="agents-h">Agents</h1>
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap">
      <table class="agents">
        <thead><tr>
          <th scope="col">Agent</th><th scope="col">Status</th><th scope="col">Last heartbeat</th>
          <th scope="col">Slots in use</th><th scope="col">Cached packages</th>
          <th scope="col">Labels</th><th scope="col">Facts</th>
          <th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${agents.value.map((a) => html`<${Row} key=${a.id} a=${a} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && agents.value.length === 0 &&
      html`<p class="empty">No agents enrolled. <code>orch-agent register</code> enrols a host.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
  </section>`;
}
