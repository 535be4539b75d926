/* tools/bench-console.cjs: the browser half of tools/bench-console.sh. Opens the console in
 * Debian's Chromium, headless, RUNS times, each in a fresh context (a cold cache), and prints
 * JSON: first contentful paint of the sign-in page, sign-in click to the jobs list
 * interactive (its first page rendered and a row's link clickable), navigation start to the
 * same point, all in ms; the rows shown; the sizes of the script and style as sent.
 *
 * usage: node bench-console.cjs BASE_URL API_KEY RUNS */
'use strict';
const { chromium } = require('playwright-core');

const [base, key, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 7);
const CHROMIUM = process.env.ORCH_TEST_CHROMIUM || '/usr/lib/chromium/chromium';

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const out = { fcp: [], signin: [], total: [], token: [], list: [], rows: 0, script_kb: 0,
    css_kb: 0 };
  try {
    for (let i = 0; i < runs; i++) {
      const context = await browser.newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 1280, height: 800 },
      });
      const page = await context.newPage();
      page.setDefaultTimeout(30000);
      const sizes = {};
      page.on('response', async (r) => {
        const u = r.url();
        if (/\/console\/app-.*\.(js|css)$/.test(u)) {
          const h = await r.allHeaders();
          sizes[u.endsWith('.js') ? 'js' : 'css'] = Number(h['content-length'] || 0);
        }
      });
      await page.goto(`${base}/console/`);
      await page.waitForSelector('#key');
      const fcp = await page.evaluate(() => new Promise((resolve) => {
        const got = performance.getEntriesByName('first-contentful-paint')[0];
        if (got) return resolve(got.startTime);
        new PerformanceObserver((l) => resolve(l.getEntries()[0].startTime))
          .observe({ type: 'paint', buffered: true });
        return undefined;
      }));
      await page.fill('#key', key);
      const clickAt = await page.evaluate(() => performance.now());
      await page.click('button[type=submit]');
      /* Interactive: the first page's rows are in and a row's link can take a click. */
      await page.waitForSelector('table.jobs tbody tr[data-job] a', { state: 'visible' });
      const done = await page.evaluate(() => new Promise((resolve) => {
        /* Painted: the frame after the rows were put in. */
        requestAnimationFrame(() => resolve({
          at: performance.now(),
          rows: document.querySelectorAll('table.jobs tbody tr[data-job]').length,
        }));
      }));
      const link = page.locator('table.jobs tbody tr[data-job] a').first();
      await link.click({ trial: true }); /* actionable: visible, stable, enabled, on top */
      /* Where the sign-in's time went: the two requests as the page saw them. */
      const took = await page.evaluate(() => {
        const d = (re) => {
          const e = performance.getEntriesByType('resource').find((r) => re.test(r.name));
          return e ? e.duration : 0;
        };
        return { token: d(/\/api\/v1\/auth\/token$/), list: d(/\/api\/v1\/jobs\?/) };
      });
      out.token.push(took.token);
      out.list.push(took.list);
      out.fcp.push(fcp);
      out.signin.push(done.at - clickAt);
      /* Navigation start to interactive, less the time the automation took to type the key
       * and click (between the sign-in page's readiness and the click). */
      const ready = await page.evaluate(() =>
        performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd);
      out.total.push(Math.max(fcp, ready) + (done.at - clickAt));
      out.rows = done.rows;
      out.script_kb = (sizes.js || 0) / 1024;
      out.css_kb = (sizes.css || 0) / 1024;
      await context.close();
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`bench-console: ${e.message}\n`);
  process.exit(1);
});
