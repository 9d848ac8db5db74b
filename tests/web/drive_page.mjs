// Opens the browser trainer (web/) in headless Chromium with playwright-core,
// lets it train N steps (its autorun mode), and writes what tests/web_page.rs
// checks.
//
//   node tests/web/drive_page.mjs --url URL --chromium PATH --out DIR [--timeout-s S]
//
// URL: the page with its parameters (step, data, autorun, batch, lr, ...).
// DIR/result.json: the page's #result (losses, curve pixels, accuracies) plus
//   the page's console errors; DIR/trained.state.onnx: the page's trained state
//   file (what its download button offers); DIR/page.png: a screenshot.

import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
for (const required of ['url', 'chromium', 'out']) {
  if (!args[required]) throw new Error(`--${required} is required`);
}
const timeout = 1000 * Number(args['timeout-s'] ?? 300);
mkdirSync(args.out, { recursive: true });

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1150, height: 1100 } });
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(args.url);
  await page.waitForSelector('body[data-done="1"]', { timeout });
  const result = JSON.parse((await page.textContent('#result')) || '{}');
  result.consoleErrors = errors;
  result.status = await page.textContent('#status');
  result.domLosses = JSON.parse(await page.textContent('#losses'));
  if (!result.error) {
    const bytes = await page.evaluate(async () => Array.from(await window.trainedStateFile()));
    writeFileSync(join(args.out, 'trained.state.onnx'), Buffer.from(bytes));
  }
  await page.screenshot({ path: join(args.out, 'page.png'), fullPage: true });
  writeFileSync(join(args.out, 'result.json'), JSON.stringify(result, null, 1));
  console.log(JSON.stringify({ status: result.status, error: result.error ?? null }));
} finally {
  await browser.close();
}
