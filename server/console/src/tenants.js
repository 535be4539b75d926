/* tenants.js: the platform operator's tenants page: GET /api/v1/tenants with its cursor, each
 * tenant's tier, status and usage against its quotas (the tenant document carries both);
 * create (POST /api/v1/tenants, the 422's `field` shown at that field) and suspend or resume
 * (PATCH /api/v1/tenants/{id}) after a confirmation. No event stream serves a platform
 * session: the list is read when the page opens and by Refresh, never on a timer. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api } from './api.js';
import { bytes } from './agents.js';
import { localTime } from './jobs.js';
import { loadPaged, pageQuery } from './ui.js';

const PAGE = 50;
const TIERS = ['free', 'standard', 'professional', 'enterprise'];
const tenants = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const readAt = signal(null);

const count = new Intl.NumberFormat();

function load(more) {
  return loadPaged({ list: tenants, cursor, loading, error, readAt },
    (c) => api('GET', `/api/v1/tenants?${pageQuery(PAGE, c)}`), more);
}

function replace(t) {
  tenants.value = tenants.value.map((x) => (x.id === t.id ? t : x));
}

async function setStatus(t, status) {
  const ask = status === 'suspended'
    ? `Suspend tenant ${t.slug}? Its API keys and tokens are refused (403) until it is resumed.`
    : `Resume tenant ${t.slug}? Its API keys and tokens work again.`;
  if (!confirm(ask)) return;
  error.value = null;
  try {
    replace(await api('PATCH', `/api/v1/tenants/${t.id}`, { status }));
  } catch (e) {
    error.value = `${t.slug}: ${e.message}`;
  }
}

/* The form's fields and the API's names for them: a 422 or 409 naming one is shown there. */
const FIELDS = new Set(['slug', 'display_name', 'tier']);

function Create() {
  const [v, setV] = useState({ slug: '', display_name: '', tier: 'standard' });
  const [fieldErr, setFieldErr] = useState({});
  const [msg, setMsg] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setV({ ...v, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setMsg(null);
    setFieldErr({});
    try {
      const t = await api('POST', '/api/v1/tenants', {
        slug: v.slug.trim(),
        display_name: v.display_name.trim() || v.slug.trim(),
        tier: v.tier,
      });
      setMsg({ ok: true, text: `Created tenant ${t.slug} (${t.tier})` });
      setV({ slug: '', display_name: '', tier: v.tier });
      if (!cursor.value) tenants.value = [...tenants.value, t];
    } catch (err) {
      const f = err.problem && err.problem.field;
      if (FIELDS.has(f)) setFieldErr({ [f]: err.message });
      else setMsg({ ok: false, text: err.message });
    } finally {
      setBusy(false);
    }
  };
  const field = (k) => ({
    'aria-invalid': fieldErr[k] ? 'true' : undefined,
    'aria-describedby': fieldErr[k] ? `err-${k}` : undefined,
  });
  const errOf = (k) => fieldErr[k] &&
    html`<span class="err field-err" id=${`err-${k}`} data-field-error=${k}>${fieldErr[k]}</span>`;
  return html`<form class="submit" onSubmit=${submit} aria-label="Create a tenant">
    <label>Name (slug) <input name="slug" required maxlength="63" value=${v.slug}
      onInput=${set('slug')} placeholder="acme" size="20" ...${field('slug')} />${errOf('slug')}</label>
    <label>Display name <input name="display_name" maxlength="200" value=${v.display_name}
      onInput=${set('display_name')} placeholder="Acme Corp" size="18"
      ...${field('display_name')} />${errOf('display_name')}</label>
    <label>Tier <select name="tier" value=${v.tier} onChange=${set('tier')} ...${field('tier')}>
      ${TIERS.map((t) => html`<option value=${t}>${t}</option>`)}
    </select>${errOf('tier')}</label>
    <button type="submit" disabled=${busy}>Create tenant</button>
    ${msg && html`<p role="status" class=${msg.ok ? 'ok' : 'err'}>${msg.text}</p>`}
  </form>`;
}

/* One use against its quota: "3 / 10 agents" with a meter; storage in binary units. */
function Use({ used, limit, unit, fmt = (n) => count.format(n), name }) {
  const u = used ?? 0;
  const full = limit != null && u >= limit;
  return html`<span class=${full ? 'use full' : 'use'} data-use=${name}>
    ${fmt(u)} / ${limit == null ? '∞' : fmt(limit)}${unit ? ` ${unit}` : ''}
    ${limit ? html`<meter min="0" max=${limit} value=${Math.min(u, limit)}
      aria-label=${`${name}: ${fmt(u)} of ${fmt(limit)}`}></meter>` : ''}</span>`;
}

function Row({ t }) {
  const q = t.quotas || {};
  const u = t.usage || {};
  const suspended = t.status === 'suspended';
  return html`<tr data-tenant=${t.id} data-slug=${t.slug}>
    <td><strong>${t.slug}</strong>${t.display_name && t.display_name !== t.slug
      ? html`<br /><small>${t.display_name}</small>` : ''}</td>
    <td>${t.tier}<br /><small class="muted">weight ${t.weight}</small></td>
    <td><span class=${`status t-${t.status}`} data-status=${t.status}>${t.status}</span></td>
    <td class="num"><${Use} name="agents" used=${u.agents} limit=${q.agents} unit="agents" /></td>
    <td class="num"><${Use} name="concurrent jobs" used=${u.concurrent_jobs}
      limit=${q.concurrent_jobs} unit="jobs" /></td>
    <td class="num"><${Use} name="storage" used=${u.storage_bytes} limit=${q.storage_bytes}
      fmt=${bytes} /></td>
    <td class="num"><${Use} name="calls today" used=${u.api_calls_today}
      limit=${q.api_calls_per_day} unit="calls" /></td>
    <td><time datetime=${t.created_at} title=${localTime(t.created_at)}>${localTime(t.created_at)}</time></td>
    <td class="acts">${suspended
      ? html`<button class="small alt" data-action="resume" onClick=${() => setStatus(t, 'active')}
          aria-label=${`Resume tenant ${t.slug}`}>Resume</button>`
      : html`<button class="small" data-action="suspend" onClick=${() => setStatus(t, 'suspended')}
          aria-label=${`Suspend tenant ${t.slug}`}>Suspend</button>`}</td>
  </tr>`;
}

export function TenantsPage() {
  useEffect(() => {
    load(false);
  }, []);
  return html`<section aria-labelledby="tenants-h">
    <h1 id="tenants-h">Tenants</h1>
    <${Create} />
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <p class="muted read-at">Usage as read at ${readAt.value ? localTime(readAt.value) : '…'}
      <button class="small alt" onClick=${() => load(false)} disabled=${loading.value}
        id="tenants-refresh">Refresh</button></p>
    <div class="table-wrap">
      <table class="tenants">
        <thead><tr>
          <th scope="col">Tenant</th><th scope="col">Tier</th><th scope="col">Status</th>
          <th scope="col">Agents</th><th scope="col">Concurrent jobs</th>
          <th scope="col">Storage</th><th scope="col">API calls today</th>
          <th scope="col">Created</th><th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${tenants.value.map((t) => html`<${Row} key=${t.id} t=${t} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && tenants.value.length === 0 && html`<p class="empty">No tenants yet.</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      Load more</button>`}
  </section>`;
}
