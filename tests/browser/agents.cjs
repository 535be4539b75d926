/* The console's agents and queues pages in Debian's Chromium, headless, through
 * playwright-core: drain the real agent and see it shown as draining, enable it and see it
 * come back online from the event stream; create a queue, pause it, see a job wait in it,
 * resume it and see the job leave it, each change checked through the REST API as well; a
 * queue past the tenant's quota refused with a clear message; a viewer's console shows no
 * action buttons, and nothing of another tenant's (its queue, its job, its job's page). Screenshots go to the directory given.
 *
 * usage: node agents.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR OTHER_JOB OTHER_QUEUE
 * (a job and a queue of another tenant, which this tenant's console must not show)
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, adminKey, viewerKey, shots, otherJob, otherQueue] = process.argv.slice(2);

const step = lib.step;

const api = lib.client(base);
const call = api.call;

const apiUntil = lib.apiUntil;

const signIn = (page, key) => lib.signIn(page, base, key);

const watch = lib.watch;

async function main() {
  const t0 = Date.now();
  await api.login(adminKey);
  const browser = await lib.launch();
  const problems = [];
  try {
    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 520 },
      timezoneId: 'Europe/Paris' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems);

    step('the agents page lists the real agent, online, with its slots');
    await signIn(page, adminKey);
    await page.click('nav a[href="#/agents"]');
    await page.waitForSelector('h1#agents-h');
    const row = 'tr[data-name="browser-agent"]';
    await page.waitForSelector(`${row} [data-status=online]`);
    const slots = (await page.textContent(`${row} [data-slots]`)).trim();
    if (!/^\d+ \/ 2$/.test(slots)) throw new Error(`slots shown: "${slots}"`);
    const agentId = await page.getAttribute(row, 'data-agent');
    await page.waitForSelector(`${row} button[data-action=revoke-credential]`); /* an admin's */

    step('drain it: the page and the API say draining');
    await page.click(`${row} button[data-action=drain]`);
    await page.waitForSelector(`${row} [data-status=draining]`);
    await apiUntil('the agent is not draining', () => call('GET', `/api/v1/agents/${agentId}`),
      (a) => a.status === 'draining');
    await page.waitForSelector(`${row} button[data-action=enable]`);
    await page.screenshot({ path: path.join(shots, 'agents.png') });

    step('enable it: it comes back online through the event stream, without a reload');
    await page.evaluate(() => { window.__noReload = true; });
    await page.click(`${row} button[data-action=enable]`);
    await page.waitForSelector(`${row} [data-status=online]`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');

    step('create a queue from the page');
    await page.click('nav a[href="#/queues"]');
    await page.waitForSelector('h1#queues-h');
    await page.fill('input[name=qname]', 'console-q');
    await page.fill('input[name=max_running]', '3');
    await page.click('form.submit button[type=submit]');
    await page.waitForSelector('form.submit p.ok');
    const qrow = 'tr[data-name="console-q"]';
    await page.waitForSelector(`${qrow} [data-paused=false]`);
    const queueId = await page.getAttribute(qrow, 'data-queue');

    step('pause it: the page and the API say paused');
    await page.click(`${qrow} button[data-action=pause]`);
    await page.waitForSelector(`${qrow} [data-paused=true]`);
    await apiUntil('the queue is not paused', () => call('GET', `/api/v1/queues/${queueId}`),
      (q) => q.paused === true);

    step('a job submitted to the paused queue shows in its depth, live');
    const job = await call('POST', '/api/v1/jobs', { queue: 'console-q', command: 'true' });
    await page.waitForFunction((sel) => {
      const td = document.querySelector(`${sel} [data-queued]`);
      return td && td.textContent.trim().startsWith('1');
    }, qrow);
    await page.screenshot({ path: path.join(shots, 'queues.png') });

    step('resume it: the job runs and the depth goes back to 0');
    await page.click(`${qrow} button[data-action=resume]`);
    await page.waitForSelector(`${qrow} [data-paused=false]`);
    await apiUntil('the queue is still paused', () => call('GET', `/api/v1/queues/${queueId}`),
      (q) => q.paused === false);
    await apiUntil('the job did not succeed', () => call('GET', `/api/v1/jobs/${job.id}`),
      (j) => j.status === 'succeeded');
    await page.waitForFunction((sel) => {
      const q = document.querySelector(`${sel} [data-queued]`);
      const r = document.querySelector(`${sel} [data-running]`);
      return q && r && q.textContent.trim() === '0' && r.textContent.trim() === '0';
    }, qrow);

    step('a quota refusal reads as a clear message naming the quota');
    const filled = [];
    for (let i = 0; i < 200; i++) {
      const res = await fetch(`${base}/api/v1/queues`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${api.token}` },
        body: JSON.stringify({ name: `fill-${i}` }),
      });
      if (res.status === 403) break;
      if (res.status !== 201) throw new Error(`filling the queues quota: ${res.status} ${await res.text()}`);
      filled.push((await res.json()).id);
    }
    const before = problems.length;
    await page.fill('input[name=qname]', 'one-too-many');
    await page.click('form.submit button[type=submit]');
    const refusal = await (await page.waitForSelector('form.submit p.err')).textContent();
    if (!/queue quota is exhausted/.test(refusal)) {
      throw new Error(`the refusal reads: ${refusal}`);
    }
    await page.screenshot({ path: path.join(shots, 'quota-refused.png') });
    /* Chromium logs the 403 itself as a console error: expected here, and only here. */
    const later = problems.splice(before);
    problems.push(...later.filter((m) => !/status of 403/.test(m)));
    for (const id of filled) await call('DELETE', `/api/v1/queues/${id}`);
    await context.close();

    step('a viewer sees both pages and no action button');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    watch(vpage, problems);
    await signIn(vpage, viewerKey);
    await vpage.click('nav a[href="#/agents"]');
    await vpage.waitForSelector(`${row} [data-status]`);
    await vpage.click('nav a[href="#/queues"]');
    await vpage.waitForSelector(`${qrow} [data-paused]`);
    const buttons = await vpage.evaluate(() =>
      document.querySelectorAll('main button, main form.submit').length);
    if (buttons !== 0) throw new Error(`a viewer sees ${buttons} buttons or forms`);
    await vpage.click('nav a[href="#/agents"]');
    await vpage.waitForSelector(`${row} [data-status]`);
    const abuttons = await vpage.evaluate(() => document.querySelectorAll('main button').length);
    if (abuttons !== 0) throw new Error(`a viewer sees ${abuttons} buttons on the agents page`);

    step("another tenant's queue, job and job page are not in this console");
    await vpage.click('nav a[href="#/queues"]');
    await vpage.waitForSelector(`${qrow} [data-paused]`);
    if (await vpage.$(`tr[data-name="${otherQueue}"]`)) throw new Error('the other tenant\'s queue is listed');
    await vpage.click('nav a[href="#/jobs"]');
    await vpage.waitForSelector(`tr[data-job="${job.id}"]`);
    if (await vpage.$(`tr[data-job="${otherJob}"]`)) throw new Error('the other tenant\'s job is listed');
    const seen = problems.length;
    await vpage.evaluate((id) => { location.hash = `#/jobs/${id}`; }, otherJob);
    const notFound = await (await vpage.waitForSelector('main p.err')).textContent();
    if (!/no such job/i.test(notFound)) throw new Error(`the other tenant's job page reads: ${notFound}`);
    /* Chromium logs the 404 itself as a console error: expected here, and only here. */
    const got = problems.splice(seen);
    problems.push(...got.filter((m) => !/status of 404/.test(m)));
    await vctx.close();

    step('clean up');
    await call('DELETE', `/api/v1/queues/${queueId}`);
    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
  }
}

lib.run(main);
