/* The platform operator's console in Debian's Chromium, headless, through playwright-core:
 * sign in with an operator token (orch_op_…) and see only the Overview, Tenants, Pools and Audit log pages; the
 * tenants list shows the browser tenant with its usage against its tier; a bad name is
 * refused at that field; create a tenant, suspend it (after a confirmation; a dismissed one
 * changes nothing) and see the API report it suspended and refuse its key, resume it with
 * the keyboard; a pool with an enrolled pool agent shows the agent online with its labels,
 * and no action button; a tenant's console shows neither page. Screenshots go to the
 * directory given.
 *
 * usage: node operator.cjs BASE_URL OPERATOR_TOKEN TENANT_ADMIN_KEY SCREENSHOT_DIR TENANT_ID
 * (TENANT_ID: the browser tenant, whose key TENANT_ADMIN_KEY is)
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, opToken, tenantKey, shots, tenantId] = process.argv.slice(2);

const step = lib.step;

/* The REST API as another client sees it (node's fetch trusts the tests' CA through
 * NODE_EXTRA_CA_CERTS): {status, body}. */
async function raw(method, p, body, bearer) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: {
      'Content-Type': 'application/json',
      ...(bearer ? { Authorization: `Bearer ${bearer}` } : {}),
    },
    body: body && JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = text;
  }
  return { status: res.status, body: json };
}

let token = null;
async function call(method, p, body) {
  const r = await raw(method, p, body, token);
  if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

const apiUntil = lib.apiUntil;

const watch = lib.watch;

async function navTitles(page) {
  return page.$$eval('nav[aria-label=Pages] a', (as) => as.map((a) => a.textContent.trim()));
}

async function main() {
  const t0 = Date.now();
  ({ access_token: token } = await call('POST', '/api/v1/auth/token', { key: opToken }));
  const browser = await lib.launch();
  const problems = [];
  const requests = [];
  let beat = null;
  try {
    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 560 },
      timezoneId: 'Europe/Paris' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems, requests);

    step('an operator token signs in; only the Overview, Tenants, Pools and Audit log pages are offered');
    await page.goto(`${base}/console/`);
    await page.fill('#key', opToken);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1#overview-h');
    const nav = await navTitles(page);
    if (nav.join(',') !== 'Overview,Tenants,Pools,Audit log') throw new Error(`a platform session's pages: ${nav}`);
    await page.click('nav a[href="#/tenants"]');
    await page.waitForSelector('h1#tenants-h');
    if (!/platform operator/.test(await page.textContent('#who'))) throw new Error('the header does not say platform');
    if (await page.$('#live')) throw new Error('a platform session shows the tenant event stream');

    step('the tenants list shows the browser tenant with its usage against its tier');
    const brow = 'tr[data-slug="browser"]';
    await page.waitForSelector(`${brow} [data-status=active]`);
    const agentsUse = (await page.textContent(`${brow} [data-use=agents]`)).replace(/\s+/g, ' ').trim();
    if (!/^1 \/ \d+ agents$/.test(agentsUse)) throw new Error(`the browser tenant's agents read: "${agentsUse}"`);
    const storage = (await page.textContent(`${brow} [data-use=storage]`)).replace(/\s+/g, ' ').trim();
    if (!/^0 B \/ [\d.]+ GiB$/.test(storage)) throw new Error(`its storage reads: "${storage}"`);
    const calls = (await page.textContent(`${brow} [data-use="calls today"]`)).replace(/\s+/g, ' ').trim();
    if (!/^[\d,. ]+ \/ [\d,. ]+ calls$/.test(calls)) throw new Error(`its calls read: "${calls}"`);

    step('a bad name is refused by the API and shown at its field');
    let seen = problems.length;
    await page.fill('input[name=slug]', 'Not A Slug');
    await page.selectOption('select[name=tier]', 'free');
    await page.click('form.submit button[type=submit]');
    const fieldErr = await (await page.waitForSelector('[data-field-error=slug]')).textContent();
    if (!fieldErr.trim()) throw new Error('the slug error is empty');
    if ((await page.getAttribute('input[name=slug]', 'aria-invalid')) !== 'true') throw new Error('the slug field is not marked invalid');
    await page.screenshot({ path: path.join(shots, 'operator-create-refused.png') });
    /* Chromium logs the 422 itself as a console error: expected here, and only here. */
    let got = problems.splice(seen);
    problems.push(...got.filter((m) => !/status of 422/.test(m)));

    step('create a tenant from the page');
    await page.fill('input[name=slug]', 'console-t');
    await page.fill('input[name=display_name]', 'Console Tenant');
    await page.click('form.submit button[type=submit]');
    await page.waitForSelector('form.submit p.ok');
    if (await page.$('[data-field-error]')) throw new Error('the field error outlived a good submit');
    const trow = 'tr[data-slug="console-t"]';
    await page.waitForSelector(`${trow} [data-status=active]`);
    const newId = await page.getAttribute(trow, 'data-tenant');
    const created = await call('GET', `/api/v1/tenants/${newId}`);
    if (created.tier !== 'free' || created.display_name !== 'Console Tenant') {
      throw new Error(`the API has: ${JSON.stringify(created)}`);
    }
    const { key } = await call('POST', `/api/v1/tenants/${newId}/api-keys`, { name: 'k', role: 'viewer' });
    if ((await raw('POST', '/api/v1/auth/token', { key })).status !== 200) throw new Error('the new key is refused');

    step('suspend it after a confirmation: the API says suspended and refuses its key');
    let asked = null;
    page.once('dialog', (d) => {
      asked = d.message();
      d.accept();
    });
    await page.click(`${trow} button[data-action=suspend]`);
    await page.waitForSelector(`${trow} [data-status=suspended]`);
    if (!/Suspend tenant console-t/.test(asked || '')) throw new Error(`the confirmation read: ${asked}`);
    await apiUntil('the tenant is not suspended', () => call('GET', `/api/v1/tenants/${newId}`),
      (t) => t.status === 'suspended');
    const refused = await raw('POST', '/api/v1/auth/token', { key });
    if (refused.status !== 403) throw new Error(`a suspended tenant's key: ${refused.status}`);
    await page.screenshot({ path: path.join(shots, 'operator-tenants.png') });

    step('a dismissed confirmation changes nothing');
    page.once('dialog', (d) => d.dismiss());
    await page.click(`${trow} button[data-action=resume]`);
    if ((await call('GET', `/api/v1/tenants/${newId}`)).status !== 'suspended') throw new Error('resumed without a yes');
    await page.waitForSelector(`${trow} [data-status=suspended]`);

    step('resume it with the keyboard: the key works again');
    page.once('dialog', (d) => d.accept());
    await page.focus(`${trow} button[data-action=resume]`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${trow} [data-status=active]`);
    await apiUntil('the tenant is not active', () => call('GET', `/api/v1/tenants/${newId}`),
      (t) => t.status === 'active');
    if ((await raw('POST', '/api/v1/auth/token', { key })).status !== 200) throw new Error('the resumed key is refused');

    step('a pool with an enrolled pool agent, online, with its labels');
    const pool = await call('POST', '/api/v1/pools', { name: 'shared-linux', tiers: ['enterprise'],
      tenants: [tenantId] });
    const et = await call('POST', `/api/v1/pools/${pool.id}/enrollment-tokens`, { name: 'hosts' });
    const reg = await call('POST', '/api/v1/agents/register', { token: et.token, name: 'pool-01',
      hostname: 'pool-01.example', slots: 4, labels: { site: 'fra1', gpu: 'none' } });
    /* A scripted agent: its heartbeats (the agent protocol's, with its credential) keep it
     * online while the page is read. */
    const heartbeat = async () => {
      const r = await raw('POST', '/api/v1/agent/heartbeat', {}, reg.credential);
      if (r.status !== 200) problems.push(`heartbeat: ${r.status} ${JSON.stringify(r.body)}`);
    };
    await heartbeat();
    beat = setInterval(heartbeat, 500);
    await page.click('nav a[href="#/pools"]');
    await page.waitForSelector('h1#pools-h');
    const prow = 'tr[data-name="shared-linux"]';
    await page.waitForSelector(prow);
    const online = (await page.textContent(`${prow} [data-online]`)).trim();
    if (online !== '1 / 1 online') throw new Error(`the pool's agents read: "${online}"`);
    const slotsText = (await page.textContent(`${prow} [data-slots]`)).trim();
    if (slotsText !== '0 / 4 slots') throw new Error(`the pool's slots read: "${slotsText}"`);
    if (!(await page.textContent(prow)).includes('browser')) throw new Error('the admitted tenant is not named');
    const arow = '[data-pool-agents="shared-linux"] tr[data-name="pool-01"]';
    await page.waitForSelector(`${arow} [data-status=online]`);
    const labels = await page.textContent(`${arow} [data-labels]`);
    if (!/site=fra1/.test(labels)) throw new Error(`its labels read: ${labels}`);
    const buttons = await page.evaluate(() => document.querySelectorAll('section.pool button').length);
    if (buttons !== 0) throw new Error(`${buttons} buttons on pool agents, which the API offers no action on`);
    await page.screenshot({ path: path.join(shots, 'operator-pools.png') });
    clearInterval(beat);
    beat = null;

    step("a tenant page's address shows the overview, and no tenant route is called");
    await page.evaluate(() => { location.hash = '#/jobs'; });
    await page.waitForSelector('h1#overview-h');
    const tenantCalls = requests.filter((r) => /\/api\/v1\/(jobs|agents|queues|events|tenant$)/.test(r));
    if (tenantCalls.length) throw new Error(`a platform session called tenant routes: ${tenantCalls}`);
    await page.evaluate(() => { location.hash = '#/tenants'; });
    await page.waitForSelector('h1#tenants-h');

    step('readable in a narrow window');
    await page.setViewportSize({ width: 420, height: 760 });
    await page.waitForSelector(`${trow} [data-status=active]`);
    const wide = await page.evaluate(() => {
      /* The outermost elements that stick out, to name them when it fails. */
      const out = [...document.querySelectorAll('body *')].filter((e) =>
        e.getBoundingClientRect().right > 421 && e.parentElement.getBoundingClientRect().right <= 421);
      return { width: document.documentElement.scrollWidth,
        out: out.slice(0, 5).map((e) => `${e.tagName}.${e.className}`) };
    });
    if (wide.width > 420) throw new Error(`the page is ${wide.width} px wide in a 420 px window: ${wide.out}`);
    await page.screenshot({ path: path.join(shots, 'operator-narrow.png') });
    await context.close();

    step("a tenant's console offers neither Tenants nor Pools");
    const tctx = await browser.newContext(opts);
    const tpage = await tctx.newPage();
    const trequests = [];
    watch(tpage, problems, trequests);
    await tpage.goto(`${base}/console/`);
    await tpage.fill('#key', tenantKey);
    await tpage.click('button[type=submit]');
    await tpage.waitForSelector('h1#overview-h');
    const tnav = await navTitles(tpage);
    if (tnav.includes('Tenants') || tnav.includes('Pools')) throw new Error(`a tenant's pages: ${tnav}`);
    await tpage.evaluate(() => { location.hash = '#/tenants'; });
    await tpage.waitForSelector('h1#overview-h');
    if (await tpage.$('h1#tenants-h')) throw new Error('a tenant sees the tenants page');
    await tpage.evaluate(() => { location.hash = '#/pools'; });
    await tpage.waitForSelector('h1#overview-h');
    const platformCalls = trequests.filter((r) => /\/api\/v1\/(tenants|pools)/.test(r));
    if (platformCalls.length) throw new Error(`a tenant session called platform routes: ${platformCalls}`);
    await tctx.close();

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    if (beat) clearInterval(beat);
    await browser.close();
  }
}

lib.run(main);
