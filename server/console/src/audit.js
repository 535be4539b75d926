/* audit.js: the audit log (GET /api/v1/audit: tenant admins and platform operators), newest
 * first, a page at a time with the API's cursor ("Older entries"). The filters (action,
 * object type and id, actor type and id, time range; a platform operator also the tenant)
 * go to the server, never applied in the page. Each entry's details expand in place. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, session } from './api.js';
import { localTime } from './jobs.js';

/* Who may read the log: the roles docs/api.md gives GET /api/v1/audit. */
export const canReadAudit = () => {
  const r = session.value && session.value.role;
  return r === 'admin' || r === 'platform';
};

const SIZES = [10, 25, 50, 100, 200];
/* The actions the server writes (docs/api.md, "Audit"), offered as suggestions. */
const ACTIONS = ['agent.delete', 'agent.disable', 'agent.drain', 'agent.enable', 'agent.register',
  'agent.revoke_credential', 'agent.rotate_credential', 'agent.unregister', 'api_key.create',
  'api_key.revoke', 'enrollment_token.create', 'enrollment_token.revoke', 'job.cancel',
  'job.submit', 'job.submit_batch', 'package.create', 'package.delete', 'pool.create',
  'pool.delete', 'pool.update', 'queue.create', 'queue.delete', 'queue.update',
  'scaling_policy.create', 'scaling_policy.update', 'schedule.create', 'schedule.update',
  'tenant.create', 'tenant.delete', 'tenant.update', 'webhook.create', 'webhook.resend',
  'webhook.update'];
const TYPES = ['agent', 'api_key', 'enrollment_token', 'job', 'package', 'pool', 'queue',
  'scaling_policy', 'schedule', 'tenant', 'webhook'];
const ACTORS = ['api_key', 'operator', 'agent', 'system'];

const EMPTY = { action: '', object_type: '', object_id: '', actor_type: '', actor_id: '',
  after: '', before: '', tenant_id: '', limit: '50' };
const entries = signal([]);
const cursor = signal(null);
const loading = signal(false);
const error = signal(null);
const filters = signal(EMPTY);

function query(f, after) {
  const q = new URLSearchParams({ limit: f.limit || '50' });
  for (const k of ['action', 'object_type', 'object_id', 'actor_type', 'actor_id', 'tenant_id'])
    if (f[k] && f[k].trim()) q.set(k, f[k].trim());
  if (f.after) q.set('created_after', new Date(f.after).toISOString());
  if (f.before) q.set('created_before', new Date(f.before).toISOString());
  if (after) q.set('cursor', after);
  return `/api/v1/audit?${q}`;
}

/* Each read is numbered, so an answer to an older read (filters changed meanwhile) is
 * dropped instead of mixed in. */
let seq = 0;
async function load(more) {
  const mine = ++seq;
  loading.value = true;
  error.value = null;
  try {
    const page = await api('GET', query(filters.value, more ? cursor.value : null));
    if (mine !== seq) return;
    entries.value = more ? [...entries.value, ...page.items] : page.items;
    cursor.value = page.next_cursor || null;
  } catch (e) {
    if (mine === seq) error.value = e.message;
  } finally {
    if (mine === seq) loading.value = false;
  }
}

function Filters() {
  const [f, setF] = useState(filters.value);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const platform = session.value && session.value.role === 'platform';
  const submit = (e) => {
    e.preventDefault();
    filters.value = f;
    load(false);
  };
  const reset = () => {
    setF(EMPTY);
    filters.value = EMPTY;
    load(false);
  };
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter the audit log">
    <label>Action <input name="action" list="audit-actions" value=${f.action}
      onInput=${set('action')} placeholder="queue.create" size="16" maxlength="100" /></label>
    <datalist id="audit-actions">${ACTIONS.map((a) => html`<option value=${a} />`)}</datalist>
    <label>Object type
      <select name="object_type" value=${f.object_type} onChange=${set('object_type')}>
        <option value="">any</option>
        ${TYPES.map((t) => html`<option value=${t}>${t}</option>`)}
      </select></label>
    <label>Object id <input name="object_id" value=${f.object_id} onInput=${set('object_id')}
      placeholder="uuid" size="12" maxlength="200" /></label>
    <label>Actor
      <select name="actor_type" value=${f.actor_type} onChange=${set('actor_type')}>
        <option value="">any</option>
        ${ACTORS.map((t) => html`<option value=${t}>${t}</option>`)}
      </select></label>
    <label>Actor id <input name="actor_id" value=${f.actor_id} onInput=${set('actor_id')}
      placeholder="uuid" size="12" maxlength="200" /></label>
    ${platform && html`<label>Tenant id <input name="tenant_id" value=${f.tenant_id}
      onInput=${set('tenant_id')} placeholder="all tenants" size="12" /></label>`}
    <label>From <input type="datetime-local" step="1" name="after" value=${f.after}
      onInput=${set('after')} /></label>
    <label>Before <input type="datetime-local" step="1" name="before" value=${f.before}
      onInput=${set('before')} /></label>
    <label>Per page
      <select name="limit" value=${f.limit} onChange=${set('limit')}>
        ${SIZES.map((n) => html`<option value=${String(n)}>${n}</option>`)}
      </select></label>
    <button type="submit">Apply</button>
    <button type="button" class="plain" onClick=${reset}>Clear</button>
  </form>`;
}

const short = (id) => (id && id.length > 12 ? `${id.slice(0, 8)}…` : id || '');

/* The object an entry is about, linked to its page where the console has one. */
function Target({ e }) {
  if (!e.object_type) return html`<span class="empty">none</span>`;
  const id = e.object_id
    ? html` <code title=${e.object_id}>${short(e.object_id)}</code>` : '';
  if (e.object_type === 'job' && e.object_id)
    return html`job <a href=${`#/jobs/${e.object_id}`} aria-label=${`Job ${e.object_id}`}>${id}</a>`;
  return html`${e.object_type}${id}`;
}

/* The detail's members in one line; the whole JSON, when opened, in a row of its own below
 * the entry (full width, so a narrow window still reads it). */
function Row({ e }) {
  const [open, setOpen] = useState(false);
  const d = e.detail && typeof e.detail === 'object' ? e.detail : null;
  const keys = d ? Object.keys(d) : [];
  const id = `detail-${e.id}`;
  return html`<tr data-entry=${e.id} data-action=${e.action} data-object=${e.object_id || ''}>
    <td><time datetime=${e.created_at} title=${e.created_at}>${localTime(e.created_at)}</time></td>
    <td>${e.actor_type} <code title=${e.actor_id}>${short(e.actor_id)}</code></td>
    <td><strong>${e.action}</strong></td>
    <td><${Target} e=${e} /></td>
    <td>${keys.length
      ? html`<button type="button" class="disclose" aria-expanded=${open ? 'true' : 'false'}
          aria-controls=${id} onClick=${() => setOpen(!open)}
          aria-label=${`Details of ${e.action}: ${keys.join(', ')}`}><span aria-hidden="true"
          >${open ? '▾' : '▸'}</span> ${keys.slice(0, 3).join(', ')}${keys.length > 3 ? ` +${keys.length - 3}` : ''}</button>`
      : html`<span class="empty">none</span>`}</td>
  </tr>
  ${open && html`<tr class="detail-row" id=${id}><td colspan="5">
    <pre class="result">${JSON.stringify(d, null, 2)}</pre></td></tr>`}`;
}

export function AuditPage() {
  useEffect(() => {
    if (canReadAudit()) load(false);
  }, []);
  if (!canReadAudit())
    return html`<section aria-labelledby="audit-h"><h1 id="audit-h">Audit log</h1>
      <p class="notice" id="audit-denied">The audit log is for the tenant's admins: your role
        (${session.value && session.value.role}) cannot read it.</p></section>`;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return html`<section aria-labelledby="audit-h">
    <h1 id="audit-h">Audit log</h1>
    <p class="muted small">Every change made through the API, newest first. Times in ${zone}.</p>
    <${Filters} />
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <div class="table-wrap" aria-busy=${loading.value ? 'true' : 'false'}>
      <table class="audit">
        <thead><tr>
          <th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th>
          <th scope="col">Target</th><th scope="col">Details</th>
        </tr></thead>
        <tbody>${entries.value.map((e) => html`<${Row} key=${e.id} e=${e} />`)}</tbody>
      </table>
    </div>
    ${!loading.value && entries.value.length === 0 && html`<p class="empty" id="audit-none">No entries match.</p>`}
    ${cursor.value && html`<button id="audit-older" onClick=${() => load(true)} disabled=${loading.value}>
      Older entries</button>`}
  </section>`;
}
