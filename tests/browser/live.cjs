/* Retry, live queues and the pushed log, in Debian's Chromium, headless, through
 * playwright-core:
 * - a failed job is retried from the jobs list: the new job (retry_of the failed one) shows up
 *   and runs (running, then dead again: the same spec) without a reload; each job's page names the other; "Retry job" on
 *   the page opens the next retry's page; a viewer sees no Retry button on either page;
 * - the queues page shows a queue created, paused and resumed through the API without a
 *   reload (queue.* events);
 * - a running job's page reads its log only when a job.output event says there is more: a job
 *   that prints, is silent until the test lets it go on (3 s after the page showed its first
 *   line), then prints again makes no /logs request during the silence (the old page read
 *   every second) and shows the late line; a chatty job's
 *   job.output events, counted on a stream of our own, stay within 4 a second.
 * Screenshots go to the directory given.
 *
 * usage: node live.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent. Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, key, viewerKey, shots] = process.argv.slice(2);
const { STEP_MS } = lib;

const step = lib.step;

const api = lib.client(base);
const call = api.call;

async function until(what, fn, ms = STEP_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/* The tenant's event stream, read here (not by the page): the job.output events of a job. */
function countOutputEvents(jobId) {
  const ctl = new AbortController();
  const seen = { n: 0, first: 0, last: 0, ready: false };
  const done = (async () => {
    const res = await fetch(`${base}/api/v1/events`, {
      signal: ctl.signal,
      headers: { Authorization: `Bearer ${api.token}`, Accept: 'text/event-stream' },
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) return;
      buf += value;
      if (buf.includes(': listening') || buf.includes('event: resync')) seen.ready = true;
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, k);
        buf = buf.slice(k + 2);
        if (block.startsWith('event: job.output\n') && block.includes(jobId)) {
          seen.n++;
          seen.last = Date.now();
          if (!seen.first) seen.first = seen.last;
        }
      }
    }
  })().catch(() => {});
  return { seen, stop: () => { ctl.abort(); return done; } };
}

async function main() {
  const t0 = Date.now();
  await api.login(key);
  const submit = async (body) => (await call('POST', '/api/v1/jobs', body)).id;
  const browser = await lib.launch();
  const jobs = [];
  const gates = [];
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1100, height: 760 },
      timezoneId: 'Europe/Paris',
    });
    const page = await context.newPage();
    const problems = [];
    lib.watch(page, problems);
    const logReads = [];
    page.on('request', (r) => {
      if (r.url().includes('/logs?')) logReads.push({ at: Date.now(), url: r.url() });
    });
    const open = async (id) => {
      await page.evaluate((h) => { location.hash = h; }, `#/jobs/${id}`);
      await page.waitForSelector(`section.job[data-job="${id}"]`);
    };

    step('sign in');
    await page.goto(`${base}/console/`);
    await page.fill('#key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('#live.live');
    await page.evaluate(() => { window.__noReload = true; });

    step('the queues page follows a queue created, paused and resumed through the API');
    await page.evaluate(() => { location.hash = '#/queues'; });
    await page.waitForSelector('#queues-h');
    const q = await call('POST', '/api/v1/queues', { name: 'live-q' });
    const row = `tr[data-queue="${q.id}"]`;
    await page.waitForSelector(`${row} [data-paused=false]`);
    await call('PATCH', `/api/v1/queues/${q.id}`, { paused: true });
    await page.waitForSelector(`${row} [data-paused=true]`);
    await page.screenshot({ path: path.join(shots, 'queues-live.png') });
    await call('PATCH', `/api/v1/queues/${q.id}`, { paused: false });
    await page.waitForSelector(`${row} [data-paused=false]`);
    await call('DELETE', `/api/v1/queues/${q.id}`);
    await page.waitForSelector(row, { state: 'detached' });

    step('a failed job is retried from the jobs list, and the retry runs');
    /* It fails again when retried (the same spec): the retry is seen to run, then end. */
    const failing = await submit({ command: 'sleep 1; echo ran; exit 3', max_attempts: 1 });
    jobs.push(failing);
    await page.evaluate(() => { location.hash = '#/jobs'; });
    await page.waitForSelector(`tr[data-job="${failing}"] [data-status=dead]`);
    await page.click(`tr[data-job="${failing}"] button[data-action=retry]`);
    const retried = await until('the retry', async () =>
      (await call('GET', `/api/v1/jobs?retry_of=${failing}`)).items[0]);
    jobs.push(retried.id);
    await page.waitForSelector(`tr[data-job="${retried.id}"] [data-status=running]`);
    await page.waitForSelector(`tr[data-job="${retried.id}"] [data-status=dead]`);
    const after = await call('GET', `/api/v1/jobs/${retried.id}`);
    if (after.attempt !== 1 || after.exit_code !== 3 || after.retry_of !== failing ||
        !after.started_at || after.command !== 'sleep 1; echo ran; exit 3')
      throw new Error(`the retry: ${JSON.stringify(after)}`);
    await page.screenshot({ path: path.join(shots, 'jobs-retry.png') });

    step('each page names the other; "Retry job" opens the next retry');
    await open(retried.id);
    await page.waitForSelector(`#retry-of[data-job="${failing}"]`);
    await open(failing);
    await page.waitForSelector(`.retried-as[data-job="${retried.id}"]`);
    await page.click('#retry');
    const next = await until('the page of the new retry', () => page.evaluate((f) => {
      const s = document.querySelector('section.job');
      return s && s.dataset.job !== f && document.querySelector('#retry-of') ? s.dataset.job : null;
    }, failing));
    jobs.push(next);
    await page.waitForSelector(`#retry-of[data-job="${failing}"]`);
    await page.waitForSelector('#job-status[data-status=running]');
    await page.waitForSelector('.log-line:text-is("ran")');
    await page.waitForSelector('#final-status:text-is("dead")');

    step('a viewer sees no Retry button');
    const vpage = await context.newPage();
    vpage.setDefaultTimeout(STEP_MS);
    await vpage.goto(`${base}/console/#/jobs`);
    await vpage.fill('#key', viewerKey);
    await vpage.click('button[type=submit]');
    await vpage.waitForSelector(`tr[data-job="${failing}"] [data-status=dead]`);
    if (await vpage.$('[data-action=retry]')) throw new Error('a viewer is offered Retry');
    await vpage.evaluate((h) => { location.hash = h; }, `#/jobs/${failing}`);
    await vpage.waitForSelector(`.retried-as[data-job="${retried.id}"]`);
    if (await vpage.$('#retry')) throw new Error('a viewer is offered "Retry job"');
    await vpage.close();

    step('the live log: read on job.output events, nothing read while the job is silent');
    /* The job is silent until the test says so (a file it waits for), so the silence is
     * as long as the test makes it, however late the page showed "early". */
    const gate = path.join(os.tmpdir(), `orch-live-gate-${process.pid}-${Date.now()}`);
    gates.push(gate);
    const gap = await submit({
      command: `echo early; i=0; while [ ! -e ${gate} ] && [ $i -lt 600 ]; do sleep 0.05; ` +
        'i=$((i+1)); done; echo late; sleep 0.5',
      max_attempts: 1,
    });
    jobs.push(gap);
    await open(gap);
    const lineShown = (t) => page.waitForFunction((x) =>
      [...document.querySelectorAll('.log-line')].some((e) => e.textContent === x), t,
    { timeout: 20000 });
    await lineShown('early');
    const quietFrom = Date.now() + 1000; /* the coalesced event's trailing edge is 250 ms */
    await new Promise((r) => setTimeout(r, 3000)); /* the silence watched, not a wait */
    const quietTo = Date.now();
    fs.writeFileSync(gate, '');
    await lineShown('late');
    const st = await page.getAttribute('#job-status', 'data-status');
    const during = logReads.filter((r) => r.at > quietFrom && r.at < quietTo);
    step(`silence of ${quietTo - quietFrom} ms: ${during.length} log reads (status ${st})`);
    if (during.length) throw new Error(`the page read the log while the job was silent: ${
      during.map((r) => r.url).join(' ')}`);
    await page.waitForSelector('#final-status:text-is("succeeded")', { timeout: 20000 });
    await page.screenshot({ path: path.join(shots, 'jobdetail-live.png') });

    step('a chatty job: at most 4 job.output events a second, the last line shown');
    const chatty = await submit({
      command: 'for i in $(seq 1 150); do echo fast $i; sleep 0.01; done',
      max_attempts: 1,
    });
    jobs.push(chatty);
    const ev = countOutputEvents(chatty);
    await until('our event stream', () => ev.seen.ready);
    await open(chatty);
    await lineShown('fast 150');
    await page.waitForSelector('#final-status:text-is("succeeded")', { timeout: 20000 });
    await until('the last job.output event', () => ev.seen.n > 0);
    await ev.stop();
    const span = Math.max(ev.seen.last - ev.seen.first, 1);
    const allowed = 1 + Math.ceil(span / 250) + 1;
    step(`chatty job: ${ev.seen.n} job.output events over ${span} ms (at most ${allowed})`);
    if (ev.seen.n > allowed) throw new Error(`${ev.seen.n} job.output events in ${span} ms`);

    if (!(await page.evaluate(() => window.__noReload === true)))
      throw new Error('the page reloaded');
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
    for (const g of gates) fs.rmSync(g, { force: true });
    await browser.close();
  }
}

lib.run(main);
