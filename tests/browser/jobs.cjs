/* The console in Debian's Chromium, headless, through playwright-core: sign in with an API
 * key, submit a job and watch its row go queued -> running -> succeeded without a reload
 * (the live event stream), sign out; sign in again and see the "session ended" page once
 * the key is revoked. Screenshots go to the directory given.
 *
 * usage: node jobs.cjs BASE_URL API_KEY SCREENSHOT_DIR
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, key, shots] = process.argv.slice(2);
const { STEP_MS } = lib;

const step = lib.step;

/* Revoke the key behind the page's session through the REST API, as another client would
 * (node's fetch trusts the tests' CA through NODE_EXTRA_CA_CERTS). */
async function revokeKey() {
  const call = async (method, p, token, body) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: {
        'Content-Type': 'application/json',
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: body && JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status}`);
    return res.status === 204 ? null : res.json();
  };
  const { access_token: t } = await call('POST', '/api/v1/auth/token', null, { key });
  const keys = await call('GET', '/api/v1/api-keys', t);
  const mine = keys.items.find((k) => key.startsWith(k.prefix));
  await call('DELETE', `/api/v1/api-keys/${mine.id}`, t);
}

async function main() {
  const t0 = Date.now();
  const browser = await lib.launch();
  try {
    /* orchd's certificate is from the tests' own CA. */
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1100, height: 640 },
      timezoneId: 'Europe/Paris',
    });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    const problems = [];
    page.on('console', (m) => {
      /* The wrong key's 401 is expected; nothing else may fail. */
      if (m.type() === 'error' && !/status of 401/.test(m.text()))
        problems.push(`console: ${m.text()} (${JSON.stringify(m.location())})`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

    step('open the sign-in page');
    const nav = await page.goto(`${base}/console/#/jobs`); /* the overview is the landing page */
    if (!nav.ok()) throw new Error(`GET /console/ answered ${nav.status()}`);
    const csp = nav.headers()['content-security-policy'] || '';
    if (!csp.includes("default-src 'self'")) throw new Error(`no strict CSP: ${csp}`);
    await page.waitForSelector('#key');
    await page.screenshot({ path: path.join(shots, 'signin.png') });

    step('a wrong key is refused with a clear message');
    await page.fill('#key', 'orch_ak_not_a_real_key_000000000000000000000000000000000000000');
    await page.click('button[type=submit]');
    await page.waitForSelector('.signin .err');

    const fcp = await page.evaluate(() => {
      const e = performance.getEntriesByName('first-contentful-paint')[0];
      return e ? Math.round(e.startTime) : -1;
    });
    step(`timing: first contentful paint of the sign-in page ${fcp} ms`);

    step('sign in');
    await page.fill('#key', key);
    const t1 = Date.now();
    await page.click('button[type=submit]');
    await page.waitForSelector('h1#jobs-h');
    await page.waitForFunction(() => !document.querySelector('button[disabled]'));
    step(`timing: sign-in to jobs list ${Date.now() - t1} ms`);
    await page.waitForSelector('#live.live');
    /* The token is in memory only. */
    const stored = await page.evaluate(() => localStorage.length + sessionStorage.length +
      document.cookie.length);
    if (stored !== 0) throw new Error('something was stored in localStorage/sessionStorage/cookies');

    step('submit a job and watch it without a reload');
    /* Every status each row shows, in order, as the page changes it. */
    await page.evaluate(() => {
      window.__noReload = true;
      window.__seen = {};
      const note = () => {
        for (const el of document.querySelectorAll('tr[data-job] [data-status]')) {
          const id = el.closest('tr').dataset.job;
          const list = (window.__seen[id] = window.__seen[id] || []);
          const s = el.dataset.status;
          if (list[list.length - 1] !== s) list.push(s);
        }
      };
      new MutationObserver(note).observe(document.body, {
        subtree: true, childList: true, attributes: true, characterData: true,
      });
    });
    await page.fill('input[name=command]', 'sleep 1.5; echo from-the-console');
    await page.click('form.submit button[type=submit]');
    const msg = await page.waitForSelector('form.submit p.ok');
    const short = (await msg.textContent()).match(/job ([0-9a-f]{8})/)[1];
    const row = `tr[data-job^="${short}"]`;
    await page.waitForSelector(`${row} [data-status=running]`);
    await page.screenshot({ path: path.join(shots, 'jobs-running.png') });
    await page.waitForSelector(`${row} [data-status=succeeded]`, { timeout: 30000 });
    await page.screenshot({ path: path.join(shots, 'jobs.png') });
    const seen = await page.evaluate((s) => {
      const id = Object.keys(window.__seen).find((k) => k.startsWith(s));
      return { list: window.__seen[id] || [], same: window.__noReload === true };
    }, short);
    if (!seen.same) throw new Error('the page reloaded');
    const order = seen.list.filter((s) => ['queued', 'running', 'succeeded'].includes(s));
    if (order.join(' ') !== 'queued running succeeded')
      throw new Error(`statuses shown: ${seen.list.join(' -> ')}`);
    step(`statuses shown: ${seen.list.join(' -> ')}`);

    step('filters are applied by the server');
    await page.selectOption('select[name=status]', 'failed');
    await page.click('form.filters button[type=submit]');
    await page.waitForSelector('p.empty');
    await page.selectOption('select[name=status]', '');
    await page.click('form.filters button[type=submit]');
    await page.waitForSelector(`${row}`);

    step('sign out');
    await page.click('#signout');
    await page.waitForSelector('#key');
    await page.waitForSelector('text=You have signed out');

    step('a revoked key ends the session with a clear page');
    await page.fill('#key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1#jobs-h');
    await revokeKey();
    await page.click('form.filters button[type=submit]'); /* the next call gets the 401 */
    await page.waitForSelector('#expired');
    await page.screenshot({ path: path.join(shots, 'expired.png') });

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
  }
}

lib.run(main);
