// The live page in a real browser: it connects, shows "live", and the
// running total of the group the test names reaches the count the test
// expects (the Go test computed it from what it produced).
//   WAGG_E2E_URL=http://127.0.0.1:8080/?aggregator=votes WAGG_E2E_KEY='option=option-1,poll_id=1'
//   WAGG_E2E_WANT=123 node --test live.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const url = process.env.WAGG_E2E_URL;
const key = process.env.WAGG_E2E_KEY;
const want = Number(process.env.WAGG_E2E_WANT);

test('the live page shows the running total of a group', { skip: !url && 'WAGG_E2E_URL not set' }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector('#status')?.textContent.trim() === 'live', null, { timeout: 30000 });
    const value = page.locator(`section[data-kind="global"] tr[data-key="${key}"] [data-value]`).first();
    await value.waitFor({ timeout: 30000 });
    await page.waitForFunction(
      ([k, n]) => {
        const el = document.querySelector(`section[data-kind="global"] tr[data-key="${k}"] [data-value]`);
        return el && Number(el.dataset.value) === n;
      },
      [key, want],
      { timeout: 30000 },
    );
    assert.equal(Number(await value.getAttribute('data-value')), want);
    if (process.env.WAGG_E2E_SCREENSHOT) await page.screenshot({ path: process.env.WAGG_E2E_SCREENSHOT });
  } finally {
    await browser.close();
  }
});
