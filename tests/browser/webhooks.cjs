/* The console's webhooks page in Debian's Chromium, headless, through playwright-core: an
 * admin makes a subscription in the page (to a closed port on loopback: orchd runs with
 * private URLs allowed and two attempts a delivery) and sees its secret once; a job's
 * job.queued event makes a delivery, which shows up and fails, attempt by attempt, without a
 * reload (connection refused, a next attempt, then failed), as the API says; Resend queues it
 * again; Disable is what the API then says; a viewer sees the log and no button; another
 * tenant's subscription is neither listed nor readable; Delete asks first.
 *
 * usage: node webhooks.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR OTHER_WEBHOOK
 *        OTHER_URL_PART
 * Run by test-browser.c. Exits 0 when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, adminKey, viewerKey, shots, otherHook, otherPart] = process.argv.slice(2);
const HOOK_URL = 'https://127.0.0.1:1/orch-hook';

const step = lib.timedStep();

const api = lib.client(base);
const call = api.call;

const apiUntil = lib.apiUntil;

const signIn = (page, key) => lib.signIn(page, base, key);

const watch = lib.watch;

const shot = (page, name) => lib.shot(page, shots, name);

async function main() {
  const t0 = Date.now();
  await api.login(adminKey);
  const browser = await lib.launch();
  const problems = [];
  try {
    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 640 },
      timezoneId: 'Europe/Paris', locale: 'en-GB' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems);

    step('an admin makes a subscription in the page and sees its secret once');
    await signIn(page, adminKey);
    await page.click('nav a[href="#/webhooks"]');
    await page.waitForSelector('h1#webhooks-h');
    await page.click('details.create summary');
    await page.fill('input[name=url]', HOOK_URL);
    await page.fill('input[name=description]', 'console test');
    await page.check('input[name=event][value="job.queued"]');
    await page.click('details.create button[type=submit]');
    const secret = (await page.textContent('#new-secret')).trim();
    if (!/^orch_whsec_[A-Za-z0-9_-]{40,}$/.test(secret)) throw new Error(`the secret reads "${secret}"`);
    const list = await call('GET', '/api/v1/webhooks');
    const hook = list.items.find((w) => w.url === HOOK_URL);
    if (!hook) throw new Error(`the API does not list it: ${JSON.stringify(list)}`);
    if ('secret' in hook || !secret.startsWith(hook.secret_prefix))
      throw new Error(`the API's subscription: ${JSON.stringify(hook)}`);
    if (JSON.stringify(hook.events) !== JSON.stringify(['job.queued', 'job.failed', 'job.dead']))
      throw new Error(`events: ${hook.events}`);
    await page.click('.notice.secret button');
    await page.waitForSelector('#new-secret', { state: 'detached' });
    if ((await page.content()).includes(secret)) throw new Error('the secret is still in the page');

    step('choose it: its delivery log is empty');
    const hrow = `tr[data-webhook="${hook.id}"]`;
    await page.waitForSelector(`${hrow} [data-enabled=true]`);
    await page.click(`${hrow} a[href="#/webhooks/${hook.id}"]`);
    await page.waitForSelector('#deliveries p.empty');

    step('a job\'s job.queued makes a delivery: it shows and fails, live, as the API says');
    await page.evaluate(() => { window.__noReload = true; });
    const job = await call('POST', '/api/v1/jobs', { command: 'true',
      requirements: { nowhere: 'x' } });
    const drow = '#deliveries tr[data-type="job.queued"]';
    await page.waitForSelector(drow);
    /* The first attempt: refused, with a next attempt (or already the second's failure). */
    await page.waitForFunction((sel) => {
      const e = document.querySelector(`${sel} [data-error]`);
      return e && e.textContent.trim() !== '';
    }, drow);
    await page.screenshot({ path: path.join(shots, 'webhooks-retrying.png') });
    await page.waitForSelector(`${drow} [data-status=failed]`);
    const shown = {
      attempts: (await page.textContent(`${drow} [data-attempts]`)).trim(),
      error: (await page.textContent(`${drow} [data-error]`)).trim(),
      code: (await page.textContent(`${drow} [data-code]`)).trim(),
    };
    const dels = await call('GET', `/api/v1/webhooks/${hook.id}/deliveries`);
    const d = dels.items.find((x) => x.type === 'job.queued');
    if (!d || d.status !== 'failed' || String(d.attempts) !== shown.attempts || shown.attempts !== '2' ||
        d.last_error !== shown.error || shown.code !== 'none')
      throw new Error(`the page shows ${JSON.stringify(shown)}, the API ${JSON.stringify(dels)}`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    await shot(page, 'webhooks.png');

    step('resend it: a new delivery of the same event, tried and failed again');
    await page.click(`${drow} button[data-action=resend]`);
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, drow);
    await apiUntil('the resent delivery did not fail',
      () => call('GET', `/api/v1/webhooks/${hook.id}/deliveries`),
      (p) => p.items.length === 2 && p.items.every((x) => x.status === 'failed'));
    await page.waitForFunction((sel) =>
      [...document.querySelectorAll(`${sel} [data-status]`)].every((s) => s.dataset.status === 'failed'),
    drow);

    step('disable it in the page: the API says disabled');
    await page.click(`${hrow} button[data-action=disable]`);
    await page.waitForSelector(`${hrow} [data-enabled=false]`);
    await apiUntil('the subscription is still enabled', () => call('GET', `/api/v1/webhooks/${hook.id}`),
      (w) => w.enabled === false);

    step('a viewer sees the log and no button, and nothing of another tenant\'s');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    watch(vpage, problems);
    await signIn(vpage, viewerKey);
    await vpage.click('nav a[href="#/webhooks"]');
    await vpage.waitForSelector(`${hrow} [data-enabled=false]`);
    await vpage.click(`${hrow} a`);
    await vpage.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, drow);
    const buttons = await vpage.evaluate(() =>
      document.querySelectorAll('main button, main form, main details.create').length);
    if (buttons !== 0) throw new Error(`a viewer sees ${buttons} buttons or forms`);
    if ((await vpage.content()).includes(otherPart)) throw new Error('the other tenant\'s subscription is listed');
    if ((await vpage.$$('tr[data-webhook]')).length !== 1) throw new Error('more subscriptions than the tenant\'s');
    const seen = problems.length;
    await vpage.evaluate((id) => { location.hash = `#/webhooks/${id}`; }, otherHook);
    const notFound = await (await vpage.waitForSelector('#deliveries p.err')).textContent();
    if (!/no such subscription/i.test(notFound)) throw new Error(`the other tenant's log reads: ${notFound}`);
    /* Chromium logs the 404 itself as a console error: expected here, and only here. */
    const got = problems.splice(seen);
    problems.push(...got.filter((m) => !/status of 404/.test(m)));
    await vctx.close();

    step('delete asks first, then the subscription and its log go');
    page.once('dialog', (dlg) => dlg.accept());
    await page.click(`${hrow} button[data-action=delete]`);
    await page.waitForSelector(hrow, { state: 'detached' });
    const gone = await fetch(`${base}/api/v1/webhooks/${hook.id}`,
      { headers: { Authorization: `Bearer ${api.token}` } });
    if (gone.status !== 404) throw new Error(`the deleted subscription reads ${gone.status}`);
    await context.close();

    step('clean up');
    await call('POST', `/api/v1/jobs/${job.id}/cancel`);
    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
  }
}

lib.run(main);
