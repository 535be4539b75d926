/* The console's deployments page in Debian's Chromium, headless, through playwright-core: a
 * version deployed through the page to the label set of the real agent (role=console) goes
 * running -> done with its target cached, live, without a reload and without a read of the
 * list on a timer; the deployment's page lists its agent as cached; bad labels, a label set
 * matching no agent and a package that does not resolve are refused at their fields; a
 * deployment to an agent that never comes (a registered agent with no process) is cancelled
 * in the page and shows `cancelled` live; a viewer sees the deployments and no action;
 * another tenant's deployment never shows, not even by its id.
 *
 * usage: node deployments.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR OTHER_ADMIN_TOKEN
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent labelled
 * role=console, and made another tenant (OTHER_ADMIN_TOKEN: a token of its admin). Exits 0
 * when every step passed. */
'use strict';
const lib = require('./lib.cjs');
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, adminKey, viewerKey, shots, otherToken] = process.argv.slice(2);
const step = lib.timedStep();

/* A tenant's REST client with token (node's fetch; the tests' CA through NODE_EXTRA_CA_CERTS). */
function as(token) {
  return async (method, p, body, type = 'application/json') => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { 'Content-Type': type, Authorization: `Bearer ${token}` },
      body: body === undefined ? undefined : type === 'application/json' ? JSON.stringify(body) : body,
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? null : res.json();
  };
}

/* A tar.gz holding run.sh, uploaded as name@version. */
async function upload(call, dir, name, version) {
  const src = fs.mkdtempSync(path.join(dir, 'src-'));
  fs.writeFileSync(path.join(src, 'run.sh'), `#!/bin/sh\necho "${name} ${version}"\n`, { mode: 0o755 });
  const out = path.join(dir, `${name}-${version}.tar.gz`);
  execFileSync('tar', ['-czf', out, '-C', src, 'run.sh']);
  return call('POST', `/api/v1/packages?name=${name}&version=${version}`, fs.readFileSync(out),
    'application/gzip');
}

/* An agent registered through the API with these labels and never started: its targets stay
 * pending. */
async function ghostAgent(call, name, labels) {
  const et = await call('POST', '/api/v1/enrollment-tokens', { name: `et-${name}`, max_uses: 1 });
  const res = await fetch(`${base}/api/v1/agents/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: et.token, name, os: 'linux', arch: 'x86_64', labels, slots: 1 }),
  });
  if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${await res.text()}`);
}

const watch = lib.watchRefusals;

async function deploy(page, pkg, labels, spread = '0') {
  await page.fill('input[name=dep-package]', pkg);
  await page.fill('input[name=dep-labels]', labels);
  await page.fill('input[name=dep-spread]', spread);
  await page.click('form.deploy button[type=submit]');
}

async function fieldError(page, field) {
  const sel = `form.deploy [data-field-error=${field}]`;
  await page.waitForSelector(sel);
  return (await page.textContent(sel)).trim();
}

async function main() {
  const t0 = Date.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'orch-deploypage-'));
  const { access_token: adminToken } = await (await fetch(`${base}/api/v1/auth/token`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ key: adminKey }) })).json();
  const call = as(adminToken);
  const other = as(otherToken);
  const browser = await lib.launch();
  const problems = [];
  const expected = { 422: 2, 404: 0 };
  try {
    step('another tenant deploys its own package to its own agent');
    await upload(other, tmp, 'secret-tool', '1.0.0');
    await ghostAgent(other, 'secret-agent', { role: 'console' });
    const secret = await other('POST', '/api/v1/packages/deployments',
      { package: 'secret-tool@latest', labels: { role: 'console' } });
    await upload(call, tmp, 'tool', '1.0.0');

    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 },
      timezoneId: 'Europe/Paris', locale: 'en-GB' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems, expected);
    const reads = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (r.method() === 'GET' && u.pathname.startsWith('/api/v1/packages/deployments')) reads.push(u.pathname);
    });

    step('no deployments yet; the navigation leads here');
    await lib.signIn(page, base, adminKey, 'deployments');
    await page.waitForSelector('#no-deployments');
    if (!(await page.$('nav a[href="#/deployments"][aria-current=page]')))
      throw new Error('the navigation does not mark the deployments page');

    step('bad input is refused at its field');
    await deploy(page, 'tool@latest', 'role');
    if (!/name=value/.test(await fieldError(page, 'labels'))) throw new Error('"role" was taken as labels');
    await deploy(page, 'tool@latest', 'role=nowhere');
    const nomatch = await fieldError(page, 'labels');
    if (!/has all these labels/.test(nomatch)) throw new Error(`a label set matching no agent reads: ${nomatch}`);
    await deploy(page, 'nosuch@latest', 'role=console');
    const nopkg = await fieldError(page, 'package');
    if (!nopkg) throw new Error('a package that does not resolve shows no error');
    if (await page.$('tr[data-deployment]')) throw new Error('a refused deployment is listed');

    step('deploy tool@latest to role=console: running -> done, live, without a reload');
    await page.evaluate(() => { window.__noReload = true; });
    const before = reads.length;
    await deploy(page, 'tool@latest', 'role=console');
    await page.waitForSelector('#deploy-msg');
    const row = 'tr[data-deployment]';
    await page.waitForSelector(`${row}[data-status=done]`);
    const counts = await page.getAttribute(`${row} [data-counts]`, 'data-counts');
    if (!/cached=1 failed=0 fetching=0 pending=0/.test(counts)) throw new Error(`counts when done: ${counts}`);
    if (!(await page.evaluate(() => window.__noReload))) throw new Error('the page reloaded');
    const listReads = reads.slice(before).filter((p) => p === '/api/v1/packages/deployments').length;
    if (listReads !== 0) throw new Error(`the list was read ${listReads} times after the deploy`);
    const id = await page.getAttribute(row, 'data-deployment');
    const d = await call('GET', `/api/v1/packages/deployments/${id}`);
    if (d.status !== 'done' || d.counts.cached !== 1 || d.version !== '1.0.0')
      throw new Error(`the API says ${JSON.stringify(d)}`);
    await lib.shot(page, shots, 'deployments.png');

    step('its page: the agent, cached');
    await page.click(`${row} a`);
    await page.waitForSelector('tr[data-target][data-state=cached]');
    const agentName = (await page.textContent('tr[data-target] td')).trim();
    if (agentName !== 'browser-agent') throw new Error(`the target reads ${agentName}`);
    await lib.shot(page, shots, 'deployment.png');

    step('a deployment to an agent that never comes stays pending; cancelled in the page, live');
    await ghostAgent(call, 'ghost', { role: 'ghost' });
    await page.goto(`${base}/console/#/deployments`);
    await page.waitForSelector(`${row}[data-status=done]`);
    await deploy(page, 'tool@1.0.0', 'role=ghost', '2000');
    const ghostRow = `${row}[data-status=running]`;
    await page.waitForSelector(ghostRow);
    const ghostId = await page.getAttribute(ghostRow, 'data-deployment');
    page.once('dialog', (dlg) => dlg.accept());
    await page.click(`tr[data-deployment="${ghostId}"] button[data-action=cancel]`);
    await page.waitForSelector(`tr[data-deployment="${ghostId}"][data-status=cancelled]`);
    const gc = await page.getAttribute(`tr[data-deployment="${ghostId}"] [data-counts]`, 'data-counts');
    if (!/cancelled=1/.test(gc)) throw new Error(`the cancelled deployment's counts: ${gc}`);
    if (await page.$(`tr[data-deployment="${ghostId}"] button[data-action=cancel]`))
      throw new Error('a cancelled deployment still offers Cancel');

    step('at 400 px the page does not scroll sideways');
    await page.setViewportSize({ width: 400, height: 800 });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 400) throw new Error(`the page is ${wide} px wide in a 400 px window`);
    await context.close();

    step('a viewer sees both deployments and no action; nothing of the other tenant\'s');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    const vexpected = { 404: 1 };
    watch(vpage, problems, vexpected);
    await lib.signIn(vpage, base, viewerKey, 'deployments');
    await vpage.waitForSelector(`tr[data-deployment="${ghostId}"]`);
    const ids = await vpage.$$eval('tr[data-deployment]', (r) => r.map((e) => e.dataset.deployment));
    if (ids.length !== 2 || ids.includes(secret.id)) throw new Error(`the viewer's list: ${ids.join()}`);
    const acts = await vpage.evaluate(() => document.querySelectorAll(
      'main form.deploy, main button[data-action]').length);
    if (acts !== 0) throw new Error(`a viewer sees ${acts} actions`);
    await vpage.goto(`${base}/console/#/deployments/${secret.id}`);
    await vpage.waitForSelector('#no-deployment');
    if (await vpage.$('tr[data-target]')) throw new Error('the other tenant\'s targets show');
    await vctx.close();

    if (problems.length) throw new Error(problems.join('\n'));
    if (expected[422] !== 0) throw new Error(`refusals not seen: ${JSON.stringify(expected)}`);
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

lib.run(main);
