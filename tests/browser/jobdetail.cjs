/* The job page (#/jobs/<id>) in Debian's Chromium, headless, through playwright-core:
 * a job that prints five lines, waits for the test, then prints 45 more shows its lines
 * arriving without a reload, then its final status and exit code, and its raw log downloads whole; a queued job that no agent
 * can take says why it waits; a running job is cancelled from the page (checked through
 * the REST API), and a viewer's page of it has no cancel button; a 200,000-line log opens
 * at its tail with only a window of lines in the page, and "Load earlier" puts the lines
 * before it above. Screenshots go to the directory given.
 *
 * usage: node jobdetail.cjs BASE_URL API_KEY SCREENSHOT_DIR
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const fs = require('fs');
const path = require('path');
const os = require('os');

const [base, key, shots] = process.argv.slice(2);
const { STEP_MS } = lib;

const step = lib.step;

const api = lib.client(base);
const call = api.call;

async function main() {
  const t0 = Date.now();
  await api.login(key);
  const submit = async (body) => (await call('POST', '/api/v1/jobs', body)).id;
  /* The big log first: it runs while the rest is checked. */
  const big = await submit({ command: 'seq 1 200000', max_attempts: 1 });
  /* Lines 1 to 5, then it waits for the test (a file), however long the browser took to
   * start, so the page sees it running with part of its output; then lines 6 to 50. */
  const gate = path.join(os.tmpdir(), `orch-jobdetail-gate-${process.pid}-${Date.now()}`);
  const lines = await submit({
    command: 'for i in $(seq 1 5); do echo line $i; done; ' +
      `i=0; while [ ! -e ${gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; ` +
      'for i in $(seq 6 50); do echo line $i; sleep 0.02; done',
    max_attempts: 1,
  });
  const waiting = await submit({ command: 'true', requirements: { os: 'windows' } });

  const browser = await lib.launch();
  const jobs = [big, lines, waiting];
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      acceptDownloads: true,
      viewport: { width: 1100, height: 760 },
      timezoneId: 'Europe/Paris',
    });
    const page = await context.newPage();
    const problems = [];
    lib.watch(page, problems);
    const open = async (id) => {
      await page.evaluate((h) => { location.hash = h; }, `#/jobs/${id}`);
      await page.waitForSelector(`section.job[data-job="${id}"]`);
    };

    step('sign in, open the job page from the jobs list');
    await page.goto(`${base}/console/#/jobs`);
    await page.fill('#key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('#live.live');
    await page.click(`a[href="#/jobs/${lines}"]`);
    await page.waitForSelector(`section.job[data-job="${lines}"]`);
    await page.evaluate(() => { window.__noReload = true; });

    step('its lines arrive while it runs, without a reload');
    /* A line shown while the page still says running: output followed live. */
    await page.waitForFunction(() => {
      const st = document.querySelector('#job-status');
      const shown = [...document.querySelectorAll('.log-line')].map((e) => e.textContent);
      return st && st.dataset.status === 'running' && shown.includes('line 5') &&
        !shown.includes('line 50');
    });
    await page.screenshot({ path: path.join(shots, 'jobdetail-running.png') });
    fs.writeFileSync(gate, '');
    await page.waitForSelector('#final-status:text-is("succeeded")', { timeout: 30000 });
    await page.waitForFunction(() => /line 50$/.test(
      [...document.querySelectorAll('.log-line')].map((e) => e.textContent).join('\n').trim()));
    const exit = await page.textContent('#exit-code');
    if (exit.trim() !== '0') throw new Error(`exit code shown: ${exit}`);
    if (!(await page.evaluate(() => window.__noReload === true)))
      throw new Error('the page reloaded');
    await page.screenshot({ path: path.join(shots, 'jobdetail.png') });
    /* A smaller one for docs/console.md. */
    await page.setViewportSize({ width: 860, height: 600 });
    await page.screenshot({ path: path.join(shots, 'jobdetail-small.png') });
    await page.setViewportSize({ width: 1100, height: 760 });

    step('the raw log downloads whole');
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const raw = fs.readFileSync(await dl.path(), 'utf8');
    const want = Array.from({ length: 50 }, (_, i) => `line ${i + 1}`).join('\n') + '\n';
    if (raw !== want) throw new Error(`downloaded ${raw.length} bytes: ${raw.slice(0, 80)}`);

    step('a queued job says why it waits');
    await open(waiting);
    await page.waitForSelector('#waiting [data-reason="no_matching_agent"]');
    await page.screenshot({ path: path.join(shots, 'jobdetail-waiting.png') });
    await call('POST', `/api/v1/jobs/${waiting}/cancel`);
    await page.waitForSelector('#job-status[data-status=cancelled]');

    step('cancel a running job from the page');
    const sleeper = await submit({ command: 'sleep 60', max_attempts: 1 });
    jobs.push(sleeper);
    await open(sleeper);
    await page.waitForSelector('#job-status[data-status=running]');
    /* A viewer's page of the same running job has no button. */
    const viewerKey = (await call('POST', '/api/v1/api-keys', { name: 'viewer', role: 'viewer' }))
      .key;
    const vpage = await context.newPage();
    vpage.setDefaultTimeout(STEP_MS);
    await vpage.goto(`${base}/console/#/jobs/${sleeper}`);
    await vpage.fill('#key', viewerKey);
    await vpage.click('button[type=submit]');
    await vpage.waitForSelector('#job-status[data-status=running]');
    if (await vpage.$('#cancel')) throw new Error('a viewer is offered "Cancel job"');
    await vpage.close();
    await page.click('#cancel');
    await page.waitForSelector('#job-status[data-status=cancelled]');
    const after = await call('GET', `/api/v1/jobs/${sleeper}`);
    if (after.status !== 'cancelled') throw new Error(`the API says ${after.status}`);

    step('a 200,000-line log opens at its tail, a window of lines in the page');
    await open(big);
    await page.waitForSelector('#final-status:text-is("succeeded")', { timeout: 30000 });
    await page.waitForSelector('.log-line:text-is("200000")');
    const shown = await page.evaluate(() => ({
      elements: document.querySelectorAll('.log-line').length,
      lines: Number(document.querySelector('#log').dataset.lines),
    }));
    step(`log: ${shown.lines} lines read (the tail), ${shown.elements} elements`);
    if (shown.elements >= 500) throw new Error(`${shown.elements} line elements in the page`);
    if (!(shown.lines > 1000 && shown.lines < 200000))
      throw new Error(`${shown.lines} lines read: not the tail`);
    await page.screenshot({ path: path.join(shots, 'jobdetail-big.png') });

    step('"Load earlier" puts the bytes before the tail above it, lines whole');
    const top = await page.evaluate(async () => {
      document.querySelector('#log').scrollTop = 0;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return Number(document.querySelector('.log-line').textContent);
    });
    await page.click('#earlier');
    await page.waitForFunction((n) => Number(document.querySelector('#log').dataset.lines) > n,
      shown.lines);
    const rendered = await page.evaluate(async () => {
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return [...document.querySelectorAll('.log-line')].map((e) => e.textContent);
    });
    const consecutive = rendered.every((t, i) =>
      i === 0 || Number(t) === Number(rendered[i - 1]) + 1);
    if (!consecutive || !rendered.includes(String(top)) || !rendered.includes(String(top - 1)))
      throw new Error(`after "Load earlier" (top was ${top}): ${rendered.join(' ')}`);

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    for (const id of jobs) {
      try {
        await call('POST', `/api/v1/jobs/${id}/cancel`);
      } catch (e) {
        /* already ended (409) */
      }
    }
    fs.rmSync(gate, { force: true });
    await browser.close();
  }
}

lib.run(main);
