// Opens Ferry's status page in headless Chromium (Debian's chromium, driven by playwright-core)
// and follows a listener through it.
// usage: node status_page.js ADMIN_URL TOKEN PATH SCREENSHOT
// Types the token into the page, waits until the page lists PATH with one listener, saves a
// screenshot and prints "SEEN"; then waits (the test stops the listener) until the page shows
// none, saves a second screenshot (SCREENSHOT with "-left" before ".png") and prints "LEFT".
// The page must load nothing from outside the gateway: any other request fails the run.
'use strict';
const { chromium } = require('playwright-core');

const [url, token, path, shot] = process.argv.slice(2);
if (!url || !token || !path || !shot) {
  console.error('usage: node status_page.js ADMIN_URL TOKEN PATH SCREENSHOT');
  process.exit(2);
}
const fail = (why) => { console.log('FAIL ' + why); process.exit(1); };
setTimeout(() => fail('timed out'), 60000).unref();

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  const origin = new URL(url).origin;
  page.on('request', (r) => { if (!r.url().startsWith(origin)) fail('the page asked for ' + r.url()); });
  page.on('pageerror', (e) => fail('script error: ' + e.message));
  await page.goto(url);
  await page.fill('#token', token);
  await page.click('#connect');
  const row = page.locator('#entities tbody tr', { hasText: path });
  await row.waitFor({ timeout: 20000 });
  await page.waitForFunction(
    (p) => [...document.querySelectorAll('#entities tbody tr')]
      .some((tr) => tr.cells[0].textContent === p && tr.cells[2].textContent === '1'),
    path, { timeout: 20000 });
  const state = await page.textContent('#state');
  if (state !== 'live') fail('state ' + state);
  await page.screenshot({ path: shot, fullPage: true });
  console.log('SEEN');
  await page.waitForFunction(
    (p) => [...document.querySelectorAll('#entities tbody tr')]
      .every((tr) => tr.cells[0].textContent !== p || tr.cells[2].textContent === '0'),
    path, { timeout: 30000 });
  await page.screenshot({ path: shot.replace(/\.png$/, '-left.png'), fullPage: true });
  console.log('LEFT');
  await browser.close();
  process.exit(0);
})().catch((e) => fail(String(e && e.message)));
