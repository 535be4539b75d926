/* What every browser script (tests/browser/*.cjs) shares: the REST client, Chromium's launch,
 * signing in, watching a page for errors, step logging, screenshots and the exit status.
 * Required as require('./lib.cjs') beside the scripts; each script keeps its own checks. */
'use strict';
const { chromium } = require('playwright-core');
const path = require('path');

const CHROMIUM = process.env.ORCH_TEST_CHROMIUM || '/usr/lib/chromium/chromium';
const STEP_MS = 15000;

function step(name) {
  process.stdout.write(`step: ${name}\n`);
}

/* A step() that prints the time since it was made. */
function timedStep() {
  const started = Date.now();
  return (name) => process.stdout.write(`step: +${Date.now() - started} ms ${name}\n`);
}

/* The REST API as another client sees it (node's fetch trusts the tests' CA through
 * NODE_EXTRA_CA_CERTS): api.call() with api.token once api.login() got one. */
function client(base) {
  const api = { token: null };
  api.call = async (method, p, body) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: {
        'Content-Type': 'application/json',
        ...(api.token ? { Authorization: `Bearer ${api.token}` } : {}),
      },
      body: body && JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? null : res.json();
  };
  api.login = async (key) => {
    api.token = (await api.call('POST', '/api/v1/auth/token', { key })).access_token;
  };
  return api;
}

/* Polls the API (not the page) until check() holds: the server's view, bounded. */
async function apiUntil(what, get, check) {
  const end = Date.now() + STEP_MS;
  for (;;) {
    const v = await get();
    if (check(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/* Debian's Chromium, headless; root in a container has no user namespaces for the sandbox. */
function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/* Signs in with key on the console's #/<route> page and waits for its heading (and, with
 * live, for the event stream). */
async function signIn(page, base, key, route = 'jobs', live = true) {
  await page.goto(`${base}/console/#/${route}`);
  await page.fill('#key', key);
  await page.click('button[type=submit]');
  await page.waitForSelector(`h1#${route}-h`);
  if (live) await page.waitForSelector('#live.live');
}

/* Console errors and page errors go to problems; requests (if given) get each request's
 * method and path. */
function watch(page, problems, requests) {
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()} (${JSON.stringify(m.location())})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  if (requests) page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
}

/* watch(), but for the refusals a test asks for (Chromium logs each refused request as a
 * console error "... status of 409 ..."): expected counts them by status ({409: 2}), and
 * only those past the count are problems. */
function watchRefusals(page, problems, expected) {
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const s = /status of (\d+)/.exec(m.text());
    if (s && expected[s[1]] > 0) expected[s[1]]--;
    else problems.push(`console: ${m.text()} (${JSON.stringify(m.location())})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/* A screenshot of the page down to the end of main's content (the docs use these: no empty
 * space below). */
async function shot(page, dir, name) {
  const h = await page.evaluate(() => Math.ceil(document.querySelector('main').getBoundingClientRect().bottom));
  const vp = page.viewportSize();
  await page.screenshot({ path: path.join(dir, name),
    clip: { x: 0, y: 0, width: vp.width, height: Math.min(vp.height, h) } });
}

/* Runs main: exit status 0 when it resolves, 1 with FAILED: and the reason otherwise. */
function run(main) {
  main().then(
    () => process.exit(0),
    (e) => {
      process.stdout.write(`FAILED: ${e.message}\n`);
      process.exit(1);
    },
  );
}

module.exports = { CHROMIUM, STEP_MS, step, timedStep, client, apiUntil, launch, signIn, watch,
  watchRefusals, shot, run };
