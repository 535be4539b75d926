/* The console's packages page in Debian's Chromium, headless, through playwright-core: two
 * versions uploaded through the page (tar.gz files made here with tar(1)), with their
 * SHA-256 computed in the browser and sent with the right content type; `latest` moves, a
 * pre-release never takes it; a 3 MiB upload shows its progress; a version uploaded twice is refused at the version field; the
 * channel `stable` moved in the page is what the API says; a job run by `tool@stable` shows
 * the reference and the version it resolved to on its page; a version a queued job needs
 * cannot be deleted (the API's 409 shown at its row), and can once nothing refers to it; a
 * viewer sees no action; another tenant's package never shows; a 400 px window does not
 * scroll sideways.
 *
 * usage: node packages.cjs BASE_URL ADMIN_KEY VIEWER_KEY SCREENSHOT_DIR OTHER_PACKAGE_NAME
 * Run by test-browser.c, which starts orchd, PostgreSQL, RabbitMQ and an agent, and uploaded
 * OTHER_PACKAGE_NAME for another tenant. Exits 0 when every step passed. */
'use strict';
const lib = require('./lib.cjs');
const { execFileSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, adminKey, viewerKey, shots, otherName] = process.argv.slice(2);
const { STEP_MS } = lib;

const step = lib.timedStep();

let token = null;
async function raw(method, p, body, type = 'application/json') {
  return fetch(`${base}${p}`, {
    method,
    headers: { 'Content-Type': type, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : type === 'application/json' ? JSON.stringify(body) : body,
  });
}
async function call(method, p, body, type) {
  const res = await raw(method, p, body, type);
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

const apiUntil = lib.apiUntil;

const signIn = (page, key) => lib.signIn(page, base, key, 'packages');

const watch = lib.watchRefusals;

const shot = (page, name) => lib.shot(page, shots, name);

/* A tool-<version>.tar.gz whose run.sh prints its version, with `pad` random bytes beside it
 * (so that the size reads in KiB). */
function makeArchive(dir, version, pad) {
  const src = fs.mkdtempSync(path.join(dir, 'src-'));
  fs.writeFileSync(path.join(src, 'run.sh'), `#!/bin/sh\necho "tool ${version}"\n`, { mode: 0o755 });
  const files = ['run.sh'];
  if (pad) {
    fs.writeFileSync(path.join(src, 'data.bin'), crypto.randomBytes(pad));
    files.push('data.bin');
  }
  const out = path.join(dir, `tool-${version}.tar.gz`);
  execFileSync('tar', ['-czf', out, '-C', src, ...files]);
  const bytes = fs.readFileSync(out);
  return { file: out, size: bytes.length, sha: crypto.createHash('sha256').update(bytes).digest('hex') };
}

async function upload(page, version, file, entrypoint) {
  await page.fill('input[name=pkg-name]', 'tool');
  await page.fill('input[name=pkg-version]', version);
  await page.fill('input[name=pkg-entrypoint]', entrypoint || '');
  await page.setInputFiles('#pkg-file', file);
  await page.click('form.upload button[type=submit]');
}

const latestOf = (page) => page.textContent('section.pkg[data-name=tool] [data-latest-version]');

async function main() {
  const t0 = Date.now();
  ({ access_token: token } = await call('POST', '/api/v1/auth/token', { key: adminKey }));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'orch-pkgpage-'));
  const browser = await lib.launch();
  const problems = [];
  const expected = { 409: 0 };
  try {
    const v1 = makeArchive(tmp, '1.0.0', 0);
    const v2 = makeArchive(tmp, '1.1.0', 20 * 1024);
    const opts = { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 },
      timezoneId: 'Asia/Kolkata', locale: 'en-GB' };
    const context = await browser.newContext(opts);
    const page = await context.newPage();
    watch(page, problems, expected);
    const posts = [];
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().includes('/api/v1/packages?'))
        posts.push({ url: r.url(), type: r.headers()['content-type'] });
    });

    step('an empty tenant: no packages');
    await signIn(page, adminKey);
    await page.waitForSelector('#no-packages');

    step('upload tool 1.0.0 through the page: its digest computed in the browser');
    await upload(page, '1.0.0', v1.file, 'run.sh');
    const row1 = 'section.pkg[data-name=tool] tr[data-version="1.0.0"]';
    await page.waitForSelector(row1);
    await page.waitForSelector('#upload-msg.ok');
    const sent = posts[0];
    const q = new URL(sent.url).searchParams;
    if (sent.type !== 'application/gzip' || q.get('sha256') !== v1.sha || q.get('name') !== 'tool' ||
        q.get('entrypoint') !== 'run.sh')
      throw new Error(`the upload was sent as ${JSON.stringify(sent)}, the file's SHA-256 is ${v1.sha}`);
    if ((await page.getAttribute(`${row1} [data-sha]`, 'data-sha')) !== v1.sha)
      throw new Error('the page shows another SHA-256');
    if ((await latestOf(page)) !== '1.0.0') throw new Error('1.0.0 is not latest');
    if (!(await page.$(`${row1} [data-latest]`))) throw new Error('1.0.0 is not marked latest');

    step('upload 1.1.0: latest moves; its size is in KiB');
    await upload(page, '1.1.0', v2.file, 'run.sh');
    const row2 = 'section.pkg[data-name=tool] tr[data-version="1.1.0"]';
    await page.waitForSelector(`${row2} [data-latest]`);
    if ((await latestOf(page)) !== '1.1.0') throw new Error('latest did not move to 1.1.0');
    if (await page.$(`${row1} [data-latest]`)) throw new Error('1.0.0 is still marked latest');
    const size = (await page.textContent(`${row2} td[data-size]`)).trim();
    if (!/^2\d(\.\d)? KiB$/.test(size)) throw new Error(`1.1.0's size reads "${size}"`);
    const api = await call('GET', '/api/v1/packages?name=tool');
    if (api.items.map((p) => p.version).join() !== '1.1.0,1.0.0' || api.items[0].sha256 !== v2.sha)
      throw new Error(`the API lists ${JSON.stringify(api.items)}`);

    step('the full SHA-256 opens from the keyboard');
    await page.focus(`${row2} details.sha summary`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${row2} details.sha[open] code.full`);
    if ((await page.textContent(`${row2} details.sha code.full`)) !== v2.sha)
      throw new Error('the full SHA-256 is not the file\'s');

    step('the same version again: the API\'s 409 at the version field');
    expected[409]++;
    await upload(page, '1.1.0', v1.file, 'run.sh');
    const dup = await page.waitForSelector('[data-field-error=version]');
    if (!/already has this version/.test(await dup.textContent()))
      throw new Error(`the version field says "${await dup.textContent()}"`);
    if ((await page.getAttribute('input[name=pkg-version]', 'aria-invalid')) !== 'true')
      throw new Error('the version field is not marked invalid');

    step('a pre-release uploaded through the API shows on Refresh, first, and is not latest');
    await call('POST', `/api/v1/packages?name=tool&version=2.0.0-rc.1&entrypoint=run.sh`,
      fs.readFileSync(v1.file), 'application/gzip');
    await page.click('#packages-refresh');
    await page.waitForSelector('section.pkg[data-name=tool] tbody tr:first-child[data-version="2.0.0-rc.1"]');
    if ((await latestOf(page)) !== '1.1.0') throw new Error('a pre-release took latest');

    step('move the channel stable to 1.0.0 in the page: the API agrees');
    const form = 'form[data-channel-form=tool]';
    await page.fill(`${form} input[name=channel]`, 'stable');
    await page.selectOption(`${form} select[name=channel-version]`, '1.0.0');
    await page.click(`${form} button[type=submit]`);
    await page.waitForSelector(`${row1} [data-channel=stable]`);
    if (!(await page.textContent('[data-channel-points=stable]')).includes('1.0.0'))
      throw new Error('the channel line does not say stable → 1.0.0');
    const chans = await call('GET', '/api/v1/packages/tool/channels');
    if (chans.items.length !== 1 || chans.items[0].version !== '1.0.0')
      throw new Error(`the API's channels: ${JSON.stringify(chans.items)}`);
    await shot(page, 'packages.png');

    step('a job run by tool@stable shows the reference and the version it resolved to');
    const job = await call('POST', '/api/v1/jobs', { package: 'tool@stable' });
    await apiUntil('the package job did not succeed', () => call('GET', `/api/v1/jobs/${job.id}`),
      (j) => j.status === 'succeeded');
    await page.goto(`${base}/console/#/jobs/${job.id}`);
    await page.waitForSelector('#package-ref [data-resolved="1.0.0"]');
    if ((await page.textContent('#package-ref [data-ref]')) !== 'tool@stable')
      throw new Error('the job page does not show the reference');
    await page.waitForSelector('#final-status');
    await shot(page, 'jobdetail-package.png');
    await page.click('#package-ref a[data-resolved]');
    await page.waitForSelector('h1#packages-h code');
    if (await page.evaluate(() => location.hash) !== '#/packages/tool')
      throw new Error('the link does not lead to the package');

    step('delete 1.0.0 while a queued job needs it: refused with the API\'s message');
    const queue = await call('POST', '/api/v1/queues', { name: 'pkg-held' });
    await call('PATCH', `/api/v1/queues/${queue.id}`, { paused: true });
    const held = await call('POST', '/api/v1/jobs', { queue: 'pkg-held', package: 'tool@1.0.0' });
    const v1id = await page.getAttribute(row1, 'data-package');
    page.once('dialog', (d) => d.dismiss());
    await page.click(`${row1} button[data-action=delete]`);
    if (!(await page.$(row1)) || await page.$('[data-delete-error]'))
      throw new Error('a dismissed confirmation did something');
    const refusal = await raw('DELETE', `/api/v1/packages/${v1id}`);
    if (refusal.status !== 409) throw new Error(`the API's delete answered ${refusal.status}`);
    const detail = (await refusal.json()).detail;
    expected[409]++;
    page.once('dialog', (d) => d.accept());
    await page.click(`${row1} button[data-action=delete]`);
    const shown = await (await page.waitForSelector('[data-delete-error="1.0.0"]')).textContent();
    if (!shown.includes(detail) || !/queued or running job/.test(shown) || !/stable/.test(shown))
      throw new Error(`the refusal reads "${shown}", the API said "${detail}"`);
    await shot(page, 'packages-refused.png');

    step('nothing refers to it any more: the delete goes through');
    await call('POST', `/api/v1/jobs/${held.id}/cancel`);
    await page.fill(`${form} input[name=channel]`, 'stable');
    await page.selectOption(`${form} select[name=channel-version]`, '1.1.0');
    await page.click(`${form} button[type=submit]`);
    await page.waitForSelector(`${row2} [data-channel=stable]`);
    page.once('dialog', (d) => d.accept());
    await page.click(`${row1} button[data-action=delete]`);
    await page.waitForSelector(row1, { state: 'detached' });
    const gone = await raw('GET', `/api/v1/packages/${v1id}`);
    if (gone.status !== 404) throw new Error(`the deleted version reads ${gone.status}`);

    step('a 3 MiB version: its progress shown while it is sent, its size in MiB');
    const big = makeArchive(tmp, '3.0.0', 3 * 1024 * 1024);
    await page.evaluate(() => {
      window.__progress = [];
      new MutationObserver(() => {
        const p = document.querySelector('#upload-progress');
        if (p) window.__progress.push([Number(p.max), Number(p.value)]);
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    await upload(page, '3.0.0', big.file, 'run.sh');
    const row3 = 'section.pkg[data-name=tool] tr[data-version="3.0.0"]';
    await page.waitForSelector(`${row3} [data-latest]`);
    const seen = await page.evaluate(() => window.__progress);
    if (!seen.length || seen.some(([max]) => max !== big.size))
      throw new Error(`upload progress seen: ${JSON.stringify(seen.slice(0, 5))}, size ${big.size}`);
    const mib = (await page.textContent(`${row3} td[data-size]`)).trim();
    if (mib !== '3.0 MiB') throw new Error(`3.0.0's size reads "${mib}"`);

    step('at 400 px the page does not scroll sideways');
    await page.goto(`${base}/console/#/packages`);
    await page.waitForSelector(row2);
    await page.setViewportSize({ width: 400, height: 800 });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 400) throw new Error(`the page is ${wide} px wide in a 400 px window`);
    await page.screenshot({ path: path.join(shots, 'packages-narrow.png') });
    await context.close();

    step('a viewer sees the packages and no action; nothing of another tenant\'s');
    const vctx = await browser.newContext(opts);
    const vpage = await vctx.newPage();
    watch(vpage, problems, expected);
    await signIn(vpage, viewerKey);
    await vpage.waitForSelector(row2);
    const acts = await vpage.evaluate(() => document.querySelectorAll(
      'main button[data-action], main form.upload, main form.channel-move, #pkg-file').length);
    if (acts !== 0) throw new Error(`a viewer sees ${acts} actions`);
    const listed = await vpage.$$eval('section.pkg', (s) => s.map((e) => e.dataset.name));
    if (listed.join() !== 'tool') throw new Error(`the viewer's page lists ${listed.join()}`);
    await vpage.goto(`${base}/console/#/packages/${otherName}`);
    await vpage.waitForSelector('#no-packages');
    if (await vpage.$('section.pkg')) throw new Error('the other tenant\'s package shows');
    await vctx.close();

    if (problems.length) throw new Error(problems.join('\n'));
    step(`done in ${Date.now() - t0} ms`);
  } finally {
    await browser.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

lib.run(main);
