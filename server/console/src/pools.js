/* pools.js: the platform operator's pools page: GET /api/v1/pools with its cursor, and each
 * pool's GET /api/v1/pools/{id} for its agents (status, last heartbeat, slots in use,
 * labels); the tenants a pool admits by name, from GET /api/v1/tenants. The API offers an
 * operator no action on a pool's agents (drain, disable and enable are tenant routes), so
 * the page has none. Read when it opens and by Refresh: no event stream serves a platform
 * session, and nothing polls. */
import { html } from 'htm/preact';
import { useEffect } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api } from './api.js';
import { ago } from './agents.js';
import { localTime } from './jobs.js';

const PAGE = 50;
/* The tenants read for their names: an allow-list naming one past these shows its id. */
const TENANT_NAMES = 500;
const pools = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const readAt = signal(null);
const names = signal(new Map());

const count = new Intl.NumberFormat();

async function loadNames() {
  const page = await api('GET', `/api/v1/tenants?limit=${TENANT_NAMES}`);
  names.value = new Map(page.items.map((t) => [t.id, t.slug]));
}

async function load(more) {
  loading.value = true;
  error.value = null;
  try {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (more && cursor.value) q.set('cursor', cursor.value);
    const [page] = await Promise.all([api('GET', `/api/v1/pools?${q}`), loadNames()]);
    /* The list carries no agents; each pool's own document does. */
    const detailed = await Promise.all(page.items.map((p) => api('GET', `/api/v1/pools/${p.id}`)));
    pools.value = more ? [...pools.value, ...detailed] : detailed;
    cursor.value = page.next_cursor || null;
    readAt.value = new Date().toISOString();
  } catch (e) {
    error.value = e.message;
  } finally {
    loading.value = false;
  }
}

function Tags({ list, none }) {
  if (!list.length) return html`<span class="empty">${none}</span>`;
  return list.map((x) => html`<span class="tag">${x}</span> `);
}

function Labels({ obj }) {
  const e = Object.entries(obj || {});
  if (!e.length) return html`<span class="empty">none</span>`;
  return e.map(([k, v]) => html`<span class="tag">${k}=${String(v)}</span> `);
}

/* Agents online of all, and slots in use of the online agents' slots. */
function totals(p) {
  const agents = p.agents || [];
  const online = agents.filter((a) => a.status === 'online');
  return {
    online: online.length,
    all: agents.length,
    inUse: agents.reduce((n, a) => n + (a.slots_in_use || 0), 0),
    slots: online.reduce((n, a) => n + a.slots, 0),
  };
}

function PoolRow({ p }) {
  const t = totals(p);
  const tenants = (p.tenants || []).map((id) => names.value.get(id) || id);
  return html`<tr data-pool=${p.id} data-name=${p.name}>
    <td><a href=${`#/pools`} onClick=${(e) => {
      e.preventDefault();
      const h = document.getElementById(`pool-${p.id}`);
      if (h) h.focus();
    }}><strong>${p.name}</strong></a></td>
    <td class="wrap"><${Tags} list=${(p.tiers || []).map((x) => `tier ${x}`)} none="" />
      <${Tags} list=${tenants} none=${(p.tiers || []).length ? '' : 'no tenant'} /></td>
    <td class="num" data-online>${t.online} / ${t.all} online</td>
    <td class="num" data-slots>${count.format(t.inUse)} / ${count.format(t.slots)} slots</td>
    <td><time datetime=${p.created_at}>${localTime(p.created_at)}</time></td>
  </tr>`;
}

function AgentRow({ a }) {
  return html`<tr data-agent=${a.id} data-name=${a.name}>
    <td><strong>${a.name}</strong>${a.hostname && a.hostname !== a.name
      ? html`<br /><small>${a.hostname}</small>` : ''}</td>
    <td><span class=${`status a-${a.status}`} data-status=${a.status}>${a.status}</span>
      ${a.connected ? '' : html` <small class="muted">not connected</small>`}</td>
    <td><time datetime=${a.last_heartbeat_at || ''}
      title=${a.last_heartbeat_at ? localTime(a.last_heartbeat_at) : ''}>${ago(a.last_heartbeat_at)}</time></td>
    <td class="num" data-slots>${a.slots_in_use} / ${a.slots} slots</td>
    <td class="wrap" data-labels><${Labels} obj=${a.labels} /></td>
  </tr>`;
}

function PoolAgents({ p }) {
  return html`<section class="pool" aria-labelledby=${`pool-${p.id}`} data-pool-agents=${p.name}>
    <h2 id=${`pool-${p.id}`} tabindex="-1">${p.name}
      <small class="muted"> · ${p.agent_count} ${p.agent_count === 1 ? 'agent' : 'agents'}</small></h2>
    ${(p.agents || []).length === 0
      ? html`<p class="empty">No agents. <code>POST /api/v1/pools/${p.id}/enrollment-tokens</code>
          makes a token for <code>orch-agent register</code>.</p>`
      : html`<div class="table-wrap"><table class="pool-agents">
          <thead><tr><th scope="col">Agent</th><th scope="col">Status</th>
            <th scope="col">Last heartbeat</th><th scope="col">Slots in use</th>
            <th scope="col">Labels</th></tr></thead>
          <tbody>${p.agents.map((a) => html`<${AgentRow} key=${a.id} a=${a} />`)}</tbody>
        </table></div>`}
  </section>`;
}

export function PoolsPage() {
  useEffect(() => {
    load(false);
  }, []);
  return html`<section aria-labelledby="pools-h">
    <h1 id="pools-h">Pools</h1>
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <p class="muted read-at">Shared agent pools, as read at ${readAt.value ? localTime(readAt.value) : '…'}
      <button class="small alt" onClick=${() => load(false)} disabled=${loading.value}
        id="pools-refresh">Refresh</button></p>
    <div class="table-wrap">
      <table class="pools">
        <thead><tr>
          <th scope="col">Pool</th><th scope="col">Admits</th><th scope="col">Agents</th>
          <th scope="col">Slots in use</th><th scope="col">Created</th>
        </tr></thead>
        <tbody>${pools.value.map((p) => html`<${PoolRow} key=${p.id} p=${p} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && pools.value.length === 0 &&
      html`<p class="empty">No pools. <code>POST /api/v1/pools</code> makes one.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
    ${pools.value.map((p) => html`<${PoolAgents} key=${p.id} p=${p} />`)}
  </section>`;
}
