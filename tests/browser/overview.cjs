/* The overview (#/overview, the landing page) in Debian's Chromium, headless, through
 * playwright-core: after sign-in it is the page shown, with its tiles (the real agent
 * online) and two charts; a job submitted through the REST API moves the succeeded tile and
 * the throughput chart (its pixels and its table) without a reload; another tenant's jobs
 * count nowhere; the charts' tables open from the keyboard; a narrow window does not
 * scroll sideways; a platform operator's overview counts every tenant's jobs. Screenshots
 * go to the directory given.
 *
 * usage: node overview.cjs BASE_URL API_KEY SCREENSHOT_DIR OTHER_JOBS OPERATOR_KEY
 * (OTHER_JOBS: how many jobs another tenant has queued, which this console must not count
 * and the platform operator's, signed in with OPERATOR_KEY, must)
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, key, shots, otherJobs, operatorKey] = process.argv.slice(2);
const { STEP_MS } = lib;

const step = lib.step;

const api = lib.client(base);
const call = api.call;

/* Submits a job and waits (through the API, bounded) until it has ended. */
async function runJob(body) {
  const { id } = await call('POST', '/api/v1/jobs', { max_attempts: 1, ...body });
  const end = Date.now() + 30000;
  for (;;) {
    const j = await call('GET', `/api/v1/jobs/${id}`);
    if (['succeeded', 'failed', 'cancelled', 'dead'].includes(j.status)) return j;
    if (Date.now() > end) throw new Error(`job ${id} still ${j.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const tile = (page, name) => page.evaluate((n) => {
  const d = document.querySelector(`[data-tile=${n}] data`);
  return d && d.value !== '' ? Number(d.value) : null;
}, name);

const tileIs = (page, name, want) => page.waitForFunction(([n, w]) => {
  const d = document.querySelector(`[data-tile=${n}] data`);
  return d && d.value === String(w);
}, [name, want]);

const canvas = (page, kind) => page.evaluate((k) =>
  document.querySelector(`[data-chart=${k}] canvas`).toDataURL(), kind);

async function main() {
  const t0 = Date.now();
  await api.login(key);
  const browser = await lib.launch();
  const problems = [];
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true,
      viewport: { width: 1100, height: 700 }, timezoneId: 'Europe/Paris', locale: 'en-GB' });
    const page = await context.newPage();
    lib.watch(page, problems);
    /* Every read of the figures the page makes: live updates must not poll. */
    const reads = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/v1/stats/jobs')) reads.push(Date.now());
    });

    step('sign in: the overview is the landing page');
    await page.goto(`${base}/console/`);
    await page.fill('#key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1#overview-h');
    await page.waitForSelector('#live.live');
    const first = await page.textContent('nav a:first-child');
    if (first.trim() !== 'Overview') throw new Error(`first page in the navigation: ${first}`);
    await page.waitForSelector('[data-chart=throughput] canvas');
    await page.waitForSelector('[data-chart=wait] canvas');
    /* The real agent is online (its first heartbeat may still be on its way). */
    await tileIs(page, 'agents', 1);
    await tileIs(page, 'succeeded', 0);
    const unit = await page.textContent('[data-tile=agents] small');
    if (unit.trim() !== 'agent') throw new Error(`the agents tile's unit: ${unit}`);

    step(`another tenant's ${otherJobs} queued jobs count nowhere`);
    await tileIs(page, 'queued', 0);
    const none = await page.getAttribute('[data-chart=throughput] .plot', 'aria-label');
    if (!/0 jobs submitted/.test(none)) throw new Error(`throughput before any job: ${none}`);

    step('a job submitted through the API moves the tile and the chart, without a reload');
    await page.evaluate(() => { window.__noReload = true; });
    const before = await canvas(page, 'throughput');
    const readsBefore = reads.length;
    const job = await runJob({ command: 'true' });
    if (job.status !== 'succeeded') throw new Error(`the job ended ${job.status}`);
    const t1 = Date.now();
    await tileIs(page, 'succeeded', 1);
    step(`timing: the succeeded tile moved ${Date.now() - t1} ms after the job ended`);
    await page.waitForFunction(() => /1 job submitted, 1 succeeded/.test(document
      .querySelector('[data-chart=throughput] .plot').getAttribute('aria-label')));
    if ((await canvas(page, 'throughput')) === before) throw new Error('the chart did not move');
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    await tileIs(page, 'queued', 0);
    await tileIs(page, 'running', 0);
    /* The job's four events (queued, assigned, running, succeeded) made at most a few reads,
     * at least 2 s apart. */
    const mine = reads.slice(readsBefore);
    if (mine.length > 4) throw new Error(`${mine.length} reads of the figures for one job`);
    for (let i = 1; i < mine.length; i++) {
      if (mine[i] - mine[i - 1] < 1900) throw new Error(`reads ${mine[i] - mine[i - 1]} ms apart`);
    }

    step('the chart as a table, from the keyboard');
    await page.focus('[data-chart=throughput] summary');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-chart=throughput] details[open] tbody tr');
    /* One row per minute with anything in it (the job may straddle two): the sums. */
    const rows = await page.$$eval('[data-chart=throughput] details tbody tr', (trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
    const total = (i) => rows.reduce((n, r) => n + Number(r[i]), 0);
    if (total(1) !== 1 || total(2) !== 1 || total(3) !== 0)
      throw new Error(`the table: ${JSON.stringify(rows)}`);
    if (!rows.every((r) => /^\d{2}:\d{2}$/.test(r[0]))) throw new Error(`minutes: ${JSON.stringify(rows)}`);
    await page.keyboard.press('Enter'); /* closed again */
    const focusable = await page.evaluate(() =>
      document.querySelector('[data-chart=wait] .plot').tabIndex);
    if (focusable !== 0) throw new Error('the wait chart cannot be reached by the keyboard');

    step('more jobs, one failing, for the screenshot');
    await runJob({ command: 'sleep 0.5' });
    await runJob({ command: 'exit 3' });
    await runJob({ command: 'true' });
    await tileIs(page, 'failed', 1);
    await tileIs(page, 'succeeded', 3);
    await page.waitForFunction(() => document.querySelector('[data-tile=failed]')
      .classList.contains('bad'));
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.screenshot({ path: path.join(shots, 'overview.png') });

    step('a narrow window: no sideways scrolling, the charts fit');
    await page.setViewportSize({ width: 380, height: 900 });
    await page.waitForFunction(() => {
      const c = document.querySelector('[data-chart=wait] canvas');
      return c && c.getBoundingClientRect().right <= window.innerWidth;
    });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (wide > 0) throw new Error(`the page scrolls sideways by ${wide} px`);
    await page.screenshot({ path: path.join(shots, 'overview-narrow.png') });

    step("the platform operator's overview counts every tenant");
    const opage = await context.newPage();
    opage.setDefaultTimeout(STEP_MS);
    opage.on('console', (m) => {
      if (m.type() === 'error') problems.push(`operator console: ${m.text()}`);
    });
    opage.on('pageerror', (e) => problems.push(`operator page error: ${e.message}`));
    await opage.goto(`${base}/console/`);
    await opage.fill('#key', operatorKey);
    await opage.click('button[type=submit]');
    await opage.waitForSelector('h1#overview-h');
    await opage.waitForSelector('text=The whole platform');
    await tileIs(opage, 'queued', Number(otherJobs));
    await tileIs(opage, 'succeeded', 3);
    await tileIs(opage, 'failed', 1);
    await tileIs(opage, 'agents', 1);

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
  }
}

lib.run(main);
