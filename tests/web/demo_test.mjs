// The web demo end to end: the real server with configs/default.textproto (the shipped shapes-world models), its
// page at / driven in headless Chromium (Debian's /usr/bin/chromium) by Playwright:
//   - a bad request (one label) shows the gateway's INVALID_ARGUMENT message;
//   - classify: an uploaded held-out scene against typed labels; the right label is listed first;
//   - search: three uploaded scenes and a sentence; the described one is ranked first;
//   - generate: frames appear while the job runs, the progress bar fills, the final image is shown;
//   - cancel: the Cancel button aborts the stream, and the server lists the job as cancelled.
// A screenshot of the page with the finished generation is written to <artifact dir>/web-demo.png.
// Usage: node demo_test.mjs <clipserve> <shapes-gen> <repo root> <artifact dir>
import { drawScenes, startServer } from '../testing/clipserve_process.mjs';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [binary, shapesGen, repoRoot, artifactDir] = process.argv.slice(2);
if (!binary || !shapesGen || !repoRoot || !artifactDir) {
  console.error('usage: node demo_test.mjs <clipserve> <shapes-gen> <repo root> <artifact dir>');
  process.exit(2);
}
const chromiumPath = process.env.CLIPSERVE_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(chromiumPath)) {
  // tools/install-deps.sh installs Debian's chromium; CI (which sets CLIPSERVE_FIXTURES_REQUIRED=1) must have it.
  const message = `${chromiumPath} is missing (apt-get install chromium, or set CLIPSERVE_CHROMIUM)`;
  if (process.env.CLIPSERVE_FIXTURES_REQUIRED === '1') {
    console.error(message);
    process.exit(1);
  }
  console.log(`skipped: ${message}`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`playwright-core is not installed (npm ci --prefix tests/web): ${e.message}`);
  process.exit(1);
}

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-web-'));
let server = null;
let browser = null;
let serverLog = () => '';

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
const watchdog = setTimeout(async () => {
  console.error('timed out after 150 s');
  await cleanup();
  process.exit(1);
}, 150000);

try {
  const spawned = startServer(binary, [`--config=${path.join(repoRoot, 'configs/default.textproto')}`]);
  server = spawned.child;
  serverLog = spawned.log;
  const { httpPort } = await spawned.ready;
  const base = `http://127.0.0.1:${httpPort}`;
  for (let i = 0;; i++) {
    const r = await fetch(`${base}/readyz`).catch(() => null);
    if (r && r.ok) break;
    assert.ok(i < 300, 'the server became ready');
    await new Promise((res) => setTimeout(res, 100));
  }
  console.log(`[${elapsed()}] server ready on ${base}`);

  // Held-out scenes (an evaluation seed, never seen in training): big shapes on plain backgrounds.
  const scenesDir = path.join(tmp, 'scenes');
  const scenes = (await drawScenes(shapesGen, { seed: 1000901, count: 24, dir: scenesDir }))
      .filter((x) => x.size === 'big' && x.background === 'plain');
  // Three scenes whose colours and shapes all differ.
  const picked = [];
  for (const x of scenes) {
    if (picked.every((p) => p.colour !== x.colour && p.shape !== x.shape)) picked.push(x);
    if (picked.length === 3) break;
  }
  assert.equal(picked.length, 3, 'three big scenes with different colours and shapes');
  const file = (x) => path.join(scenesDir, x.file);

  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${base}/`);
  await page.waitForSelector('#server-status.ok', { timeout: 10000 });
  assert.match(await page.textContent('#model-name'), /^shapes-world /);
  console.log(`[${elapsed()}] page loaded, model ${await page.textContent('#model-name')}`);

  // --- a bad request shows the server's message
  await page.setInputFiles('#classify-file', file(picked[0]));
  await page.fill('#classify-labels', 'only one label');
  await page.click('#classify-run');
  await page.waitForSelector('#classify-error:not([hidden])', { timeout: 15000 });
  const error = await page.textContent('#classify-error');
  assert.match(error, /INVALID_ARGUMENT \(HTTP 400\): .*at least 2/, error);
  console.log(`[${elapsed()}] bad request: ${error}`);

  // --- classify
  const target = picked[0];
  const want = `a photo of a ${target.colour} ${target.shape}`;
  const labels = [`a photo of a ${picked[1].colour} ${picked[1].shape}`, `a photo of a ${target.colour} ${picked[1].shape}`,
                  want, `a photo of a ${picked[2].colour} ${target.shape}`];
  await page.setInputFiles('#classify-file', file(target));
  await page.fill('#classify-labels', labels.join('\n'));
  await page.click('#classify-run');
  await page.waitForSelector('#classify-error[hidden]', { state: 'attached' });
  await page.waitForSelector('#classify-results li', { timeout: 15000 });
  const rows = await page.$$eval('#classify-results li', (lis) => lis.map((li) => li.dataset.label));
  assert.deepEqual([...rows].sort(), [...labels].sort(), 'one row per label');
  assert.equal(rows[0], want, `${target.file} is ${want}; the page ranked ${rows.join(' > ')}`);
  console.log(`[${elapsed()}] classify: ${target.file} -> ${rows[0]}`);

  // --- search
  const wanted = picked[1];
  await page.setInputFiles('#search-files', picked.map(file));
  await page.fill('#search-query', `a photo of a ${wanted.colour} ${wanted.shape}`);
  await page.click('#search-run');
  await page.waitForSelector('#search-results li.best', { timeout: 15000 });
  const ranked = await page.$$eval('#search-results li', (lis) => lis.map((li) => li.dataset.file));
  assert.equal(ranked.length, 3);
  assert.equal(ranked[0], wanted.file, `"${wanted.colour} ${wanted.shape}" finds ${wanted.file}; got ${ranked}`);
  console.log(`[${elapsed()}] search: ${ranked.join(' > ')}`);

  // --- cancel a long generation after its first frame
  await page.fill('#generate-prompt', 'a blue square on a yellow background');
  await page.fill('#generate-steps', '500');
  await page.fill('#generate-frame-every', '1');
  await page.click('#generate-run');
  await page.waitForFunction(() => Number(document.getElementById('generate-frame').dataset.frames) >= 1,
                             null, { timeout: 30000 });
  await page.click('#generate-cancel');
  await page.waitForSelector('body[data-generation=cancelled]', { timeout: 10000 });
  let cancelled = false;
  for (let i = 0; i < 100 && !cancelled; i++) {
    const list = await (await fetch(`${base}/v1/generations`)).json();
    cancelled = (list.generations || []).some((g) => g.prompt === 'a blue square on a yellow background' &&
                                                     g.state === 'GENERATION_STATE_CANCELLED');
    if (!cancelled) await new Promise((res) => setTimeout(res, 100));
  }
  assert.ok(cancelled, 'closing the stream cancelled the job on the server');
  console.log(`[${elapsed()}] cancel: the job is cancelled on the server`);

  // --- generate: frames appear live, then the final image
  const steps = 40;
  await page.fill('#generate-prompt', 'a red circle on a white background');
  await page.fill('#generate-steps', String(steps));
  await page.fill('#generate-frame-every', '5');
  await page.fill('#generate-seed', '11');
  await page.click('#generate-run');
  // A frame while the job is still running (not only at the end).
  await page.waitForFunction(() => Number(document.getElementById('generate-frame').dataset.frames) >= 1 &&
                                   document.body.dataset.generation === 'running', null, { timeout: 60000 });
  const midway = await page.$eval('#generate-progress', (p) => p.value);
  assert.ok(midway > 0 && midway < 1, `a frame arrived midway (progress ${midway})`);
  await page.waitForSelector('body[data-generation=done]', { timeout: 120000 });
  const frames = Number(await page.$eval('#generate-frame', (img) => img.dataset.frames));
  assert.equal(frames, steps / 5 - 1 + 1, 'a frame every 5 steps (the last step`s frame is the final image)');
  assert.equal(await page.$eval('#generate-progress', (p) => p.value), 1);
  const src = await page.$eval('#generate-frame', (img) => img.src);
  assert.match(src, /^data:image\/png;base64,iVBORw0KGgo/);
  const natural = await page.$eval('#generate-frame', (img) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(natural, [64, 64]);
  const status = await page.textContent('#generate-status');
  assert.match(status, new RegExp(`^done: ${steps} steps in [\\d.]+ s, similarity -?[\\d.]+, seed 11$`), status);
  console.log(`[${elapsed()}] generate: ${frames} images shown; ${status}`);

  fs.mkdirSync(artifactDir, { recursive: true });
  const shot = path.join(artifactDir, 'web-demo.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`[${elapsed()}] screenshot: ${shot}`);
  assert.deepEqual(consoleErrors.filter((e) => !/Failed to load resource.*400/.test(e)), [],
                   'no JavaScript errors on the page');
  clearTimeout(watchdog);
  await browser.close();
  browser = null;
  server.kill('SIGTERM');
  const exit = await new Promise((res) => server.on('exit', (c) => res(c)));
  server = null;
  assert.equal(exit, 0, 'the server drained and exited 0');
  await cleanup();
  console.log(`[${elapsed()}] passed`);
} catch (e) {
  console.error(e);
  console.error(`--- server log (last 3000 chars) ---\n${serverLog().slice(-3000)}`);
  clearTimeout(watchdog);
  await cleanup();
  process.exit(1);
}
