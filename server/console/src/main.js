/* main.js: the console's shell: sign-in, the page chosen by the URL's fragment (#/jobs),
 * the header with the live indicator and sign-out. docs/console.md says what exists. */
import './style.css';
import { html } from 'htm/preact';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { ended, isPlatform, liveState, session, signIn, signOut } from './api.js';
import { JobsPage } from './jobs.js';
import { AgentsPage } from './agents.js';
import { QueuesPage } from './queues.js';
import { JobPage } from './jobdetail.js';
import { SchedulesPage } from './schedules.js';
import { WebhooksPage } from './webhooks.js';
import { TenantsPage } from './tenants.js';
import { PoolsPage } from './pools.js';
import { QuotasPage } from './quotas.js';
import { AuditPage, canReadAudit } from './audit.js';
import { OverviewPage } from './overview.js';
import { PackagesPage } from './packages.js';
import { DeploymentsPage } from './deployments.js';

const PAGES = { jobs: { title: 'Jobs', view: JobsPage },
  /* #/jobs/<id>: a page under another, not in the navigation. */
  'jobs/': { title: 'Job', view: JobPage, under: 'jobs' } };
PAGES.agents = { title: 'Agents', view: AgentsPage };
PAGES.queues = { title: 'Queues', view: QueuesPage };
PAGES.schedules = { title: 'Schedules', view: SchedulesPage };
PAGES.webhooks = { title: 'Webhooks', view: WebhooksPage };
/* #/webhooks/<id>: the same page with that subscription's deliveries. */
PAGES['webhooks/'] = { title: 'Webhooks', view: WebhooksPage, under: 'webhooks' };
/* A page's `scope`: 'platform' (an operator token's session only), 'any', or by default
 * 'tenant' (the tenant routes answer a platform token 403, so it never sees those pages). */
PAGES.tenants = { title: 'Tenants', view: TenantsPage, scope: 'platform' };
PAGES.pools = { title: 'Pools', view: PoolsPage, scope: 'platform' };
/* can: whether the session may use the page; the navigation leaves it out if not. A platform
 * token has no tenant of its own (GET /api/v1/tenant is 403). */
PAGES.quotas = { title: 'Quotas', view: QuotasPage, can: () => !!(session.value && session.value.tenant_id) };
PAGES.audit = { title: 'Audit log', view: AuditPage, scope: 'any', can: canReadAudit };
/* The overview is the landing page (#/ and the brand link) of every session, tenant or
 * platform, first in the navigation. */
PAGES.overview = { title: 'Overview', view: OverviewPage, scope: 'any', first: true };
/* #/packages, and #/packages/<name>: that package's versions alone. */
PAGES.packages = { title: 'Packages', view: PackagesPage };
PAGES['packages/'] = { title: 'Packages', view: PackagesPage, under: 'packages' };
/* #/deployments, and #/deployments/<id>: that deployment and its agents. */
PAGES.deployments = { title: 'Deployments', view: DeploymentsPage };
PAGES['deployments/'] = { title: 'Deployments', view: DeploymentsPage, under: 'deployments' };
const HOME = 'overview';
const route = signal(location.hash.replace(/^#\/?/, '') || HOME);
addEventListener('hashchange', () => {
  route.value = location.hash.replace(/^#\/?/, '') || HOME;
});

/* Whether this session may see the page, and the page it starts on: the first it may see. */
function forSession(p) {
  const scope = p.scope || 'tenant';
  return scope === 'any' || scope === (isPlatform() ? 'platform' : 'tenant');
}
const home = () => (forSession(PAGES[HOME]) ? HOME
  : Object.keys(PAGES).find((k) => !PAGES[k].under && forSession(PAGES[k])));

function SignIn() {
  const [key, setKey] = useState('');
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      await signIn(key.trim());
      setKey('');
    } catch (x) {
      setErr(x.message);
    } finally {
      setBusy(false);
    }
  };
  const why = ended.value;
  return html`<main class="signin">
    <h1>orch console</h1>
    ${why === 'expired' && html`<div class="notice" role="alert" id="expired">
      <strong>Your session has ended.</strong> The token expired or its API key was revoked.
      Sign in again to go on.</div>`}
    ${why === 'signed-out' && html`<p class="notice" role="status">You have signed out.</p>`}
    <form onSubmit=${submit}>
      <label for="key">API key or operator token</label>
      <input id="key" name="key" type="password" autocomplete="off" required
        value=${key} onInput=${(e) => setKey(e.target.value)} placeholder="orch_ak_… or orch_op_…" />
      <button type="submit" disabled=${busy}>Sign in</button>
      ${err && html`<p class="err" role="alert">${err}</p>`}
      <p class="hint">The key is exchanged for a short-lived token, kept in this tab's memory
        only: reloading or closing the tab signs you out.</p>
    </form>
  </main>`;
}

function Shell() {
  const [name, ...rest] = route.value.split('/');
  const arg = rest.join('/');
  const s = session.value;
  const start = home();
  let page = (arg && PAGES[`${name}/`]) || PAGES[route.value];
  if (!page || !forSession(page)) page = PAGES[start];
  useEffect(() => {
    document.title = `${page.title} · orch console`;
  }, [page]);
  return html`<div class="shell">
    <header>
      <a class="brand" href=${`#/${start}`}>orch</a>
      <nav aria-label="Pages">
        ${Object.entries(PAGES).filter(([, p]) => !p.under && forSession(p) && (!p.can || p.can()))
          .sort(([, a], [, b]) => (b.first ? 1 : 0) - (a.first ? 1 : 0)).map(([k, p]) => html`<a href=${`#/${k}`}
          aria-current=${page === p || page.under === k ? 'page' : undefined}>${p.title}</a>`)}
      </nav>
      ${!isPlatform() && html`<span class=${`live ${liveState.value}`} id="live"
        title="Live updates">${liveState.value}</span>`}
      <span class="who" id="who">${isPlatform() ? 'platform operator' : s.role}</span>
      <button onClick=${() => signOut()} id="signout">Sign out</button>
    </header>
    <main><${page.view} arg=${arg} /></main>
  </div>`;
}

function App() {
  return session.value ? html`<${Shell} />` : html`<${SignIn} />`;
}

render(html`<${App} />`, document.getElementById('app'));
