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
const { chromium } = require('playwright-core');
const path = require('path');

const [base, adminKey, viewerKey, shots, firedId, queueId, otherName] = process.argv.slice(2);
const CHROMIUM = process.env.ORCH_TEST_CHROMIUM || '/usr/lib/chromium/chromium';
const STEP_MS = 15000;

const started = Date.now();
function step(name) {
  process.stdout.write(`step: +${Date.now() - started} ms ${name}\n`);
}

let token = null;
async function call(method, p, body) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: {
      'Content-Type': 'application/json',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    },
    body: body && JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

async function apiUntil(what, get, check) {
  const end = Date.now() + STEP_MS;
  for (;;) {
    const v = await get();
    if (check(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function signIn(page, key) {
  await page.goto(`${base}/console/#/jobs`);
  await page.fill('#key', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1#jobs-h');
  await page.waitForSelector('#live.live');
}

function watch(page, problems) {
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()} (${JSON.stringify(m.location())})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/* "18:30": the hour and minute of iso on a Paris clock (en-GB, 24 h). */
const parisHm = (iso) => new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris',
  hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(iso));

/* A screenshot of the page down to the end of main's content (the docs use these: no empty
 * space below). */
async function shot(page, name) {
  const h = await page.evaluate(() => Math.ceil(document.querySelector('main').getBoundingClientRect().bottom));
  const vp = page.viewportSize();
  await page.screenshot({ path: path.join(shots, name),
    clip: { x: 0, y: 0, width: vp.width, height: Math.min(vp.height, h) } });
}

async function main() {
  const t0 = Date.now();
  ({ access_token: token } = await call('POST', '/api/v1/auth/token', { key: adminKey }));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
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
      { headers: { Authorization: `Bearer ${token}` } });
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

main().then(
  () => process.exit(0),
  (e) => {
    process.stdout.write(`FAILED: ${e.message}\n`);
    process.exit(1);
  },
);
