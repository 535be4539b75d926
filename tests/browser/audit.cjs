/* The console's audit log in Debian's Chromium, headless, through playwright-core: actions
 * done through the API (queue.create, queue.update) listed newest first with their times in
 * the viewer's zone; details expanded from the keyboard; pages of 10 with "Older entries"
 * (the API's cursor); filters sent to the server (action, object type, object id, time);
 * another tenant's records never shown, even when asked for by id; a viewer's console has no
 * audit page in its navigation and reads nothing of the log.
 *
 * usage: node audit.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR OTHER_QUEUE
 * (OTHER_QUEUE: a queue another tenant created, whose record must not show). Exits 0 when
 * every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, adminKey, viewerKey, shots, otherQueue] = process.argv.slice(2);
const { STEP_MS } = lib;
const ZONE = 'Asia/Tokyo';
const UPDATES = 11; /* with the creation: 12 records about the queue */

const step = lib.step;

const api = lib.client(base);
const call = api.call;

const rows = (page) => page.$$eval('table.audit tbody tr[data-entry]', (trs) =>
  trs.map((tr) => ({ action: tr.dataset.action, object: tr.dataset.object })));

/* Applies the filter form and waits for the page to show the answer to that request. */
async function apply(page, want) {
  const [req] = await Promise.all([
    page.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/audit'),
    page.click('form.filters button[type=submit]'),
  ]);
  const res = await req.response();
  if (res.status() !== 200) throw new Error(`${req.url()}: ${res.status()}`);
  const q = new URL(req.url()).searchParams;
  for (const [k, v] of Object.entries(want))
    if (q.get(k) !== v) throw new Error(`the request asked ${k}=${q.get(k)}, not ${v}: ${req.url()}`);
  await page.waitForSelector('.table-wrap[aria-busy=false]');
  return q;
}

const signIn = (page, key) => lib.signIn(page, base, key, 'jobs', false);

async function main() {
  const t0 = Date.now();
  await api.login(adminKey);
  step('a queue created and updated through the API');
  const q = await call('POST', '/api/v1/queues', { name: 'audited' });
  for (let i = 0; i < UPDATES; i++)
    await call('PATCH', `/api/v1/queues/${q.id}`, { paused: i % 2 === 0 });

  const browser = await lib.launch();
  const problems = [];
  const opts = { ignoreHTTPSErrors: true, locale: 'en-US', viewport: { width: 1100, height: 700 },
    timezoneId: ZONE };
  try {
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    lib.watch(page, problems);

    step("an admin's navigation has the audit log; newest first");
    await signIn(page, adminKey);
    await page.click('nav a[href="#/audit"]');
    await page.waitForSelector(`table.audit tr[data-action="queue.create"][data-object="${q.id}"]`);
    const all = await rows(page);
    if (all[0].action !== 'queue.update') throw new Error(`the newest entry is ${all[0].action}`);
    const mine = all.filter((r) => r.object === q.id);
    if (mine.length !== UPDATES + 1) throw new Error(`${mine.length} entries about the queue`);
    if (mine[mine.length - 1].action !== 'queue.create') throw new Error('the creation is not the oldest');
    if (all.some((r) => r.object === otherQueue)) throw new Error("another tenant's entry is listed");

    step("times in the viewer's zone");
    const first = 'table.audit tbody tr[data-entry]:first-child';
    const iso = await page.getAttribute(`${first} time`, 'datetime');
    const want = new Intl.DateTimeFormat('en-US', { dateStyle: 'short', timeStyle: 'medium',
      timeZone: ZONE }).format(new Date(iso));
    const shown = (await page.textContent(`${first} time`)).trim();
    if (shown !== want) throw new Error(`time shown "${shown}", in ${ZONE} "${want}"`);

    step('details expand from the keyboard');
    await page.focus(`${first} button.disclose`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${first} button.disclose[aria-expanded=true]`);
    const detail = await page.textContent(`${first} + tr.detail-row pre`);
    if (!/"request_id"/.test(detail) || !/"paused"/.test(detail)) throw new Error(`details: ${detail}`);
    await page.screenshot({ path: path.join(shots, 'audit.png') });
    /* A smaller one for docs/console.md. */
    await page.setViewportSize({ width: 860, height: 470 });
    await page.screenshot({ path: path.join(shots, 'audit-small.png') });
    step('readable in a 380 px window: the table scrolls in its box, the page does not');
    await page.setViewportSize({ width: 380, height: 700 });
    const over = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
    if (over > 0) throw new Error(`the page is ${over} px wider than the window`);
    await page.setViewportSize(opts.viewport);

    step('pages of 10 about queues, with the cursor');
    await page.selectOption('select[name=object_type]', 'queue');
    await page.selectOption('select[name=limit]', '10');
    await apply(page, { object_type: 'queue', limit: '10' });
    let got = await rows(page);
    if (got.length !== 10 || got.some((r) => r.object !== q.id)) throw new Error(`page 1: ${JSON.stringify(got)}`);
    const [older] = await Promise.all([
      page.waitForRequest((r) => new URL(r.url()).searchParams.has('cursor')),
      page.click('#audit-older'),
    ]);
    if (new URL(older.url()).searchParams.get('object_type') !== 'queue') throw new Error('the cursor lost the filter');
    await page.waitForFunction(() => document.querySelectorAll('table.audit tbody tr[data-entry]').length === 12);
    await page.waitForSelector('#audit-older', { state: 'detached' });
    got = await rows(page);
    if (got[11].action !== 'queue.create') throw new Error(`the last is ${got[11].action}`);

    step('filter by action, by object id, by time');
    await page.selectOption('select[name=object_type]', '');
    await page.fill('input[name=action]', 'queue.create');
    await apply(page, { action: 'queue.create' });
    got = await rows(page);
    if (got.length !== 1 || got[0].object !== q.id) throw new Error(`queue.create: ${JSON.stringify(got)}`);
    await page.fill('input[name=action]', '');
    await page.fill('input[name=object_id]', q.id);
    await apply(page, { object_id: q.id });
    got = await rows(page);
    if (got.length !== 10 || got.some((r) => r.object !== q.id)) throw new Error(`object id: ${JSON.stringify(got)}`);
    await page.waitForSelector('#audit-older'); /* still 10 a page */
    await page.fill('input[name=object_id]', '');
    await page.fill('input[name=before]', '2001-01-01T00:00');
    await apply(page, { created_before: new Date('2001-01-01T00:00:00+09:00').toISOString() });
    await page.waitForSelector('#audit-none');

    step("another tenant's entries never show, even asked for by id");
    await page.click('form.filters button.plain');
    await page.waitForSelector(`table.audit tr[data-object="${q.id}"]`);
    await page.fill('input[name=object_id]', otherQueue);
    await apply(page, { object_id: otherQueue });
    await page.waitForSelector('#audit-none');
    await context.close();

    step('a viewer has no audit page, and reads nothing of the log');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    vpage.setDefaultTimeout(STEP_MS);
    vpage.on('pageerror', (e) => problems.push(`viewer page error: ${e.message}`));
    let reads = 0;
    vpage.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/v1/audit') reads++;
    });
    await signIn(vpage, viewerKey);
    await vpage.waitForSelector('nav a[href="#/quotas"]');
    if (await vpage.$('nav a[href="#/audit"]')) throw new Error('a viewer sees the audit log in the navigation');
    await vpage.evaluate(() => { location.hash = '#/audit'; });
    await vpage.waitForSelector('#audit-denied');
    if (reads) throw new Error(`a viewer's console read the log ${reads} times`);
    await vctx.close();

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await call('DELETE', `/api/v1/queues/${q.id}`).catch(() => {});
    await browser.close();
  }
}

lib.run(main);
