// Loads /docs in headless Chromium and checks what a reader would see: the operations of the
// document rendered, and nothing asked of any host but the node itself.
//   node docs.mjs BASE_URL SCREENSHOT.png
import { chromium } from 'playwright-core';

const [base, screenshot] = process.argv.slice(2);
const origin = new URL(base);
const foreign = [];
const failed = [];

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: 60_000,
});
let problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1600 } });
  // Any request to another host is recorded and never sent.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.hostname !== '127.0.0.1') {
      foreign.push(route.request().url());
      return route.abort();
    }
    return route.continue();
  });
  const page = await context.newPage();
  page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));

  const response = await page.goto(`${base}/docs`, { waitUntil: 'networkidle', timeout: 60_000 });
  if (!response || response.status() !== 200) {
    problems.push(`GET /docs answered ${response?.status()}`);
  }
  await page.waitForSelector('.opblock', { timeout: 60_000 });
  const operations = await page.locator('.opblock').count();
  const paths = await page.locator('.opblock-summary-path').allTextContents();
  const text = paths.map((p) => p.replace(/\u200b/g, '')).join('\n');
  for (const expected of ['/api/v1/checkout', '/api/v1/auth/login', '/api/v1/orders/{id}']) {
    if (!text.includes(expected)) problems.push(`operation ${expected} is not on the page`);
  }
  if (operations < 70) problems.push(`only ${operations} operations rendered`);
  const title = await page.locator('.info .title').first().textContent();
  if (!title?.includes('hexmarket')) problems.push(`title is ${title}`);
  await page.screenshot({ path: screenshot });
  console.log(`docs: ${operations} operations rendered, title "${title?.trim()}", screenshot ${screenshot}`);
} finally {
  await browser.close();
}

for (const url of foreign) problems.push(`request to another host: ${url}`);
for (const f of failed) {
  if (!foreign.some((u) => f.startsWith(u))) problems.push(`request failed: ${f}`);
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
