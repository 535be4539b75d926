/* The console's quotas page in Debian's Chromium, headless, through playwright-core: the
 * tenant's tier and six quotas as use against limit; the operator's override marked; bytes
 * and calls with their units; the daily reset in the viewer's zone; queues created through
 * the API counted on the page without a reload (the stream's queue.* events), the bar marked
 * "Near the limit" at 80% and "Limit reached" at 100%, and back to 0 when they are deleted;
 * no read of the tenant while nothing happens (no polling); readable in a 380 px window.
 *
 * usage: node quotas.cjs BASE_URL ADMIN_KEY SCREENSHOT_DIR
 * Run by test-browser.c, which sets the tenant's agents quota to 4 (an override). Exits 0
 * when every step passed; prints what failed otherwise. */
'use strict';
const lib = require('./lib.cjs');
const path = require('path');

const [base, adminKey, shots] = process.argv.slice(2);
const ZONE = 'America/New_York';

const step = lib.step;

const api = lib.client(base);
const call = api.call;

const quota = (k) => `li[data-quota="${k}"]`;

async function expectText(page, sel, re) {
  const t = (await page.textContent(sel)).replace(/\s+/g, ' ').trim();
  if (!re.test(t)) throw new Error(`${sel} reads "${t}", not ${re}`);
  return t;
}

async function main() {
  const t0 = Date.now();
  await api.login(adminKey);
  const browser = await lib.launch();
  const problems = [];
  const made = [];
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US',
      viewport: { width: 1100, height: 760 }, timezoneId: ZONE });
    const page = await context.newPage();
    lib.watch(page, problems);
    let reads = 0;
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/v1/tenant') reads++;
    });

    step('sign in and open the quotas page from the navigation');
    await page.goto(`${base}/console/`);
    await page.fill('#key', adminKey);
    await page.click('button[type=submit]');
    await page.waitForSelector('#live.live');
    await page.click('nav a[href="#/quotas"]');
    await page.waitForSelector(`${quota('queues')}[data-used="0"]`);
    await page.evaluate(() => { window.__noReload = true; });

    step('the tier, the six quotas with their units, the override marked');
    await expectText(page, '#tier', /^standard$/);
    for (const k of ['agents', 'concurrent_jobs', 'schedules', 'queues', 'storage_bytes', 'api_calls_per_day'])
      await page.waitForSelector(`${quota(k)} [role=meter]`);
    await expectText(page, `${quota('agents')} [data-text]`, /^1 of 4 agents$/);
    if (!(await page.$(`${quota('agents')} [data-override]`))) throw new Error('the agents override is not marked');
    if (await page.$(`${quota('queues')} [data-override]`)) throw new Error('queues marked as overridden');
    await expectText(page, `${quota('queues')} [data-text]`, /^0 of 5 queues$/);
    await expectText(page, `${quota('storage_bytes')} [data-text]`, /^\d+(\.\d+)? (B|KiB|MiB) of 20 GiB$/);
    await expectText(page, `${quota('api_calls_per_day')} [data-text]`, /^[\d,]+ of 5,000 calls per day$/);

    step("the daily reset is 00:00 UTC, written in the viewer's zone");
    const now = new Date();
    const midnight = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
    const at = await page.getAttribute('#calls-reset', 'datetime');
    if (at !== midnight.toISOString()) throw new Error(`reset at ${at}, not ${midnight.toISOString()}`);
    const want = new Intl.DateTimeFormat('en-US', { dateStyle: 'short', timeStyle: 'medium',
      timeZone: ZONE }).format(midnight);
    await expectText(page, '#calls-reset', new RegExp(`^${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));

    step('four queues made through the API: 4 of 5, near the limit, without a reload');
    const before = reads;
    for (let i = 0; i < 4; i++) made.push((await call('POST', '/api/v1/queues', { name: `quota-${i}` })).id);
    await page.waitForSelector(`${quota('queues')}[data-used="4"][data-level=near]`);
    await expectText(page, `${quota('queues')} [data-mark]`, /Near the limit/);
    await expectText(page, `${quota('queues')} .quota-pct`, /^80%$/);
    const burst = reads - before;
    if (burst < 1 || burst > 3) throw new Error(`four creations made ${burst} reads of the tenant`);

    step('the fifth: the limit reached, said in words');
    made.push((await call('POST', '/api/v1/queues', { name: 'quota-4' })).id);
    await page.waitForSelector(`${quota('queues')}[data-used="5"][data-level=full]`);
    await expectText(page, `${quota('queues')} [data-mark]`, /Limit reached: creating more is refused/);
    const label = await page.getAttribute(`${quota('queues')} [role=meter]`, 'aria-valuetext');
    if (!/^5 of 5 queues \(100%\): limit reached$/.test(label)) throw new Error(`the meter says "${label}"`);
    await page.screenshot({ path: path.join(shots, 'quotas.png'), fullPage: true });
    /* A smaller one for docs/console.md. */
    await page.setViewportSize({ width: 760, height: 455 });
    await page.screenshot({ path: path.join(shots, 'quotas-small.png') });

    step('no read while nothing happens (no polling)');
    const quiet = reads;
    await page.waitForTimeout(2500);
    if (reads !== quiet) throw new Error(`${reads - quiet} reads of the tenant in 2.5 quiet seconds`);

    step('readable in a 380 px window');
    await page.setViewportSize({ width: 380, height: 800 });
    const over = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
    if (over > 0) throw new Error(`the page is ${over} px wider than the window`);
    await page.screenshot({ path: path.join(shots, 'quotas-narrow.png') });

    step('the queues deleted: back to 0, live');
    for (const id of made.splice(0)) await call('DELETE', `/api/v1/queues/${id}`);
    await page.waitForSelector(`${quota('queues')}[data-used="0"][data-level=ok]`);
    if (await page.$(`${quota('queues')} [data-mark]`)) throw new Error('a mark on an empty quota');
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    await context.close();

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    for (const id of made) await call('DELETE', `/api/v1/queues/${id}`).catch(() => {});
    await browser.close();
  }
}

lib.run(main);
