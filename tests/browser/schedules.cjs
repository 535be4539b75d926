/* The console's schedules page in Debian's Chromium, headless, through playwright-core: a
 * schedule made through the API shows its next run in the viewer's zone (Europe/Paris, not
 * the schedule's Asia/Tokyo nor UTC) and its next five runs; a schedule that fired shows its
 * job, waiting in a paused queue, and the job's result arrives live when the queue is
 * resumed; Disable and Enable in the page are what the API then says; Delete asks first; a
 * viewer's console shows the schedules and no button, and nothing of another tenant's.
 *
 * usage: node schedules.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR FIRED_SCHEDULE
 *        PAUSED_QUEUE OTHER_SCHEDULE_NAME
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent, and made
 * FIRED_SCHEDULE fire into PAUSED_QUEUE. Exits 0 when every step passed. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, adminKey, viewerKey, shots, firedId, queueId, otherName] = process.argv.slice(2);

const step = lib.timedStep();

const api = lib.client(base);
const call = api.call;

const apiUntil = lib.apiUntil;

const signIn = (page, key) => lib.signIn(page, base, key);

const watch = lib.watch;

/* "18:30": the hour and minute of iso on a Paris clock (en-GB, 24 h). */
const parisHm = (iso) => new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris',
  hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(iso));

const shot = (page, name) => lib.shot(page, shots, name);

async function main() {
  const t0 = Date.now();
  await api.login(adminKey);
  const browser = await lib.launch();
  const problems = [];
  try {
    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 560 },
      timezoneId: 'Europe/Paris', locale: 'en-GB' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems);

    step('a schedule made through the API shows its next run in the viewer\'s zone');
    const made = await call('POST', '/api/v1/schedules', { name: 'console-sched',
      cron: '30 2 * * *', timezone: 'Asia/Tokyo', job: { command: 'true' },
      missed_policy: 'run_once', overlap_policy: 'queue_one' });
    await signIn(page, adminKey);
    await page.click('nav a[href="#/schedules"]');
    await page.waitForSelector('h1#schedules-h');
    const row = 'tr[data-name="console-sched"]';
    await page.waitForSelector(`${row} [data-enabled=true]`);
    const next = await page.getAttribute(`${row} td[data-next]`, 'data-next');
    if (Date.parse(next) !== Date.parse(made.next_run_at))
      throw new Error(`next run shown ${next}, the API says ${made.next_run_at}`);
    const cell = await page.textContent(`${row} td[data-next] time`);
    /* 02:30 in Tokyo is 18:30 (or 19:30 in summer) in Paris, the browser's zone. */
    if (!cell.includes(parisHm(made.next_run_at)) || cell.includes('02:30'))
      throw new Error(`next run reads "${cell}", not Paris's ${parisHm(made.next_run_at)}`);
    const text = await page.textContent(row);
    for (const want of ['30 2 * * *', 'Asia/Tokyo', 'missed: run once', 'overlap: queue one'])
      if (!text.includes(want)) throw new Error(`the row lacks "${want}": ${text}`);

    step('its next five runs, read when asked for');
    await page.click(`${row} details.runs summary`);
    await page.waitForSelector(`${row} [data-next-runs] li:nth-child(5)`);
    const runs = await page.$$eval(`${row} [data-next-runs] time`, (ts) => ts.map((t) => t.dateTime));
    for (let i = 0; i < 5; i++)
      if (Date.parse(runs[i]) !== Date.parse(made.next_run_at) + i * 86400000)
        throw new Error(`next runs: ${runs.join(', ')}`);
    if (!(await page.textContent(`${row} [data-next-runs]`)).includes('02:30 +09:00 in Asia/Tokyo'))
      throw new Error('the runs do not say their time in the schedule\'s zone');

    step('the fired schedule shows its job, queued in the paused queue');
    const fired = await call('GET', `/api/v1/schedules/${firedId}`);
    const jobId = fired.last_firing && fired.last_firing.job_id;
    if (!jobId) throw new Error(`no fired job: ${JSON.stringify(fired)}`);
    const frow = `tr[data-schedule="${firedId}"]`;
    await page.waitForSelector(`${frow} a[data-last-job="${jobId}"][href="#/jobs/${jobId}"]`);
    await page.waitForSelector(`${frow} [data-job-status=queued]`);

    step('resume the queue: the job runs, and its result arrives without a reload');
    await page.evaluate(() => { window.__noReload = true; });
    await call('PATCH', `/api/v1/queues/${queueId}`, { paused: false });
    await page.waitForSelector(`${frow} [data-job-status=succeeded]`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    await shot(page, 'schedules.png');

    step('disable it in the page: the API says disabled, with no next run');
    await page.click(`${row} button[data-action=disable]`);
    await page.waitForSelector(`${row} [data-enabled=false]`);
    await apiUntil('the schedule is still enabled', () => call('GET', `/api/v1/schedules/${made.id}`),
      (s) => s.enabled === false && s.next_run_at === null);
    if ((await page.getAttribute(`${row} td[data-next]`, 'data-next')) !== '')
      throw new Error('a disabled schedule shows a next run');
    await page.screenshot({ path: path.join(shots, 'schedules-disabled.png') });

    step('enable it again: a next run, in the page and the API');
    await page.click(`${row} button[data-action=enable]`);
    await page.waitForSelector(`${row} [data-enabled=true]`);
    const back = await apiUntil('the schedule is not enabled',
      () => call('GET', `/api/v1/schedules/${made.id}`), (s) => s.enabled === true && s.next_run_at);
    await page.waitForSelector(`${row} td[data-next="${back.next_run_at}"]`);

    step('keyboard: Tab reaches the Disable button and Enter presses it');
    await page.focus(`${row} details.runs summary`);
    for (let i = 0; i < 4; i++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement.dataset.action === 'disable')) break;
    }
    if (!(await page.evaluate(() => document.activeElement.getAttribute('aria-label'))).includes('console-sched'))
      throw new Error('Tab did not reach the row\'s Disable button');
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${row} [data-enabled=false]`);

    step('delete asks first; declined, the schedule stays; accepted, it goes');
    page.once('dialog', (d) => d.dismiss());
    await page.click(`${row} button[data-action=delete]`);
    await call('GET', `/api/v1/schedules/${made.id}`);
    page.once('dialog', (d) => d.accept());
    await page.click(`${row} button[data-action=delete]`);
    await page.waitForSelector(row, { state: 'detached' });
    const gone = await fetch(`${base}/api/v1/schedules/${made.id}`,
      { headers: { Authorization: `Bearer ${api.token}` } });
    if (gone.status !== 404) throw new Error(`the deleted schedule reads ${gone.status}`);
    await context.close();

    step('a viewer sees the schedules and no button; nothing of another tenant\'s');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    watch(vpage, problems);
    await signIn(vpage, viewerKey);
    await vpage.click('nav a[href="#/schedules"]');
    await vpage.waitForSelector(`${frow} [data-job-status=succeeded]`);
    const buttons = await vpage.evaluate(() => document.querySelectorAll('main button').length);
    if (buttons !== 0) throw new Error(`a viewer sees ${buttons} buttons`);
    if (await vpage.$(`tr[data-name="${otherName}"]`)) throw new Error('the other tenant\'s schedule is listed');
    if ((await vpage.$$('tbody tr[data-schedule]')).length !== 1)
      throw new Error('the viewer sees another schedule than the tenant\'s one');
    await vpage.setViewportSize({ width: 420, height: 700 });
    await vpage.screenshot({ path: path.join(shots, 'schedules-narrow.png') });
    await vctx.close();

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
  }
}

lib.run(main);
