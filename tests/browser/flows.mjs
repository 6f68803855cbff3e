// The field app in a real browser: Debian's chromium, headless, driven by playwright-core, on a
// phone-sized viewport. Run by tests/test_serve_browser.py, which starts the server, writes the case
// file (argv[2]) and checks the database afterwards. Writes what it saw to case.out as JSON.
//   node flows.mjs case.json
import { mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = { steps: [] };
const step = (name, data = {}) => { out.steps.push({ name, ...data }); console.log(`[flows] ${name}`, JSON.stringify(data).slice(0, 300)); };
const fail = (msg) => { throw new Error(msg); };
const b64 = (path) => readFileSync(path).toString('base64');

function compare(a, b) {
  let maxAbs = 0, sumAbs = 0, dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    maxAbs = Math.max(maxAbs, d); sumAbs += d; dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i];
  }
  return { max_abs: maxAbs, mean_abs: sumAbs / a.length, cosine: dot / Math.sqrt(na * nb), n: a.length };
}
const f32 = (s) => { const b = Buffer.from(s, 'base64'); return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)); };

async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 30000 });
  const state = await page.evaluate(() => document.body.dataset.ready);
  if (state !== '1') fail(`page failed to start: ${await page.textContent('#fatal')}`);
}

function profileRoot() { // of shared memory, the temp folder and this folder, the one with most room
  const room = (dir) => { try { const f = statfsSync(dir); return Number(f.bavail) * Number(f.bsize); } catch { return -1; } };
  return ['/dev/shm', tmpdir(), process.cwd()].reduce((a, b) => (room(b) > room(a) ? b : a));
}

async function main() {
  // Chromium stores nothing (Cache.put: "network error") while its profile's disk has under 1 % (at most
  // 2 GB) free, and CI disks run nearly full: the profile goes where there is most room.
  const userDataDir = mkdtempSync(join(profileRoot(), 'lugha-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: cfg.chromium || '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    locale: 'en-US', serviceWorkers: 'allow',
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.setDefaultTimeout(30000);
  try {
    // 1. consent first: nothing is stored before it
    await page.goto(cfg.base);
    await waitReady(page);
    if (await page.isHidden('#consent')) fail('consent screen not shown on first visit');
    await page.screenshot({ path: cfg.screenshot_consent });
    await page.selectOption('#tester-lang', cfg.lang);
    await page.click('#consent-agree');
    await page.waitForSelector('#main', { state: 'visible' });
    step('consent');

    // 2. the UI in the demo language
    await page.selectOption('#lang', cfg.lang);
    await page.waitForFunction((want) => document.querySelector('[data-tab=photo]').textContent === want, cfg.expect_tab_photo);
    step('language', { tab: await page.textContent('[data-tab=photo]') });

    // 3. photo -> words on the server, then a judgment with a better caption
    await page.setInputFiles('#photo', cfg.photo_png);
    await page.waitForSelector('#photo-results li');
    const serverLabels = await page.$$eval('#photo-results li strong', (els) => els.map((e) => e.textContent));
    const photoState = await page.evaluate(() => window.lugha.state.lastPhoto);
    step('photo_server', { labels: serverLabels, query_id: photoState.query_id });
    await page.screenshot({ path: cfg.screenshot, fullPage: true });
    const first = page.locator('#photo-results li').first();
    await first.locator('button[data-field=correct][data-value=false]').click();
    await first.locator('button[data-field=appropriate][data-value=true]').click();
    await first.locator('input[name=caption]').fill(cfg.better_caption);
    await first.locator('button[type=submit]').click();
    await first.locator('.fb-status', { hasText: '#' }).waitFor();
    const photoFeedback = Number((await first.locator('form').getAttribute('data-saved')));
    step('photo_feedback', { id: photoFeedback });

    // 4. words -> photos from the gallery, and a judgment on a found image
    await page.click('[data-tab=text]');
    await page.fill('#query', cfg.query);
    await page.click('#text-form button');
    await page.waitForSelector('#text-results li img');
    // the first image is in view (the rest load lazily as the tester scrolls)
    await page.waitForFunction(() => { const i = document.querySelector('#text-results img'); return i.complete && i.naturalWidth > 0; });
    const found = await page.$$eval('#text-results img', (els) => els.map((e) => e.alt));
    const card = page.locator('#text-results li').first();
    await card.locator('button[data-field=correct][data-value=true]').click();
    await card.locator('button[type=submit]').click();
    await card.locator('.fb-status', { hasText: '#' }).waitFor();
    const textFeedback = Number(await card.locator('form').getAttribute('data-saved'));
    step('text_search', { found, feedback_id: textFeedback });
    await page.screenshot({ path: cfg.screenshot_text, fullPage: true });

    // 5. on-phone mode: fetch the int8 graph once, run it in WebAssembly
    await page.click('[data-tab=photo]');
    await page.check('#phone-toggle');
    await page.waitForFunction(() => { const L = window.lugha, p = L.state.config.phone; return L.phone.isReady(p) && L.phone.isTextReady(p); },
      null, { timeout: 60000 }).catch(async () => fail(`phone not ready: ${await page.textContent('#phone-status')} / ${await page.evaluate(() => window.lugha.phone.textReason())}`));
    const golden = await page.evaluate(() => window.lugha.checkPhone());
    if (!golden.ok || !golden.text || !golden.text.ok) fail(`golden samples differ on the phone: ${JSON.stringify(golden)}`);
    step('golden', golden);
    const parity = await page.evaluate(async ({ cases, png, jpg, queries }) => {
      const L = window.lugha, res = {}, text = {};
      const blob = (data, type) => new Blob([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], { type });
      const images = { png: blob(png, 'image/png'), jpg: blob(jpg, 'image/jpeg') };
      for (const c of cases) res[c.name] = Array.from(await L.preprocess.preprocessBlob(images[c.image], c.spec, c.spec.layout));
      const phoneRun = await L.phone.classify(L.state.config.phone, images.png, L.state.lang, 5);
      for (const q of queries) text[q] = await L.phone.searchText(L.state.config.phone, q, 5);
      return { pixels: res, phone: phoneRun, text };
    }, { cases: cfg.pixel_cases, png: b64(cfg.photo_png), jpg: b64(cfg.photo_jpg), queries: Object.keys(cfg.server_text) });
    out.pixels = {};
    for (const c of cfg.pixel_cases) out.pixels[c.name] = { ...compare(parity.pixels[c.name], f32(c.expected)), image: c.image };
    out.phone_vs_server = { ...compare(parity.phone.embedding, cfg.server_embedding),
                            phone_labels: parity.phone.results.map((r) => r.label) };
    out.phone_text = {};
    for (const [q, want] of Object.entries(cfg.server_text)) {
      const got = parity.text[q];
      out.phone_text[q] = { ...compare(got.embedding, want.embedding), ids: got.results.map((r) => r.id), input_ids: got.input_ids };
    }
    step('parity', { pixels: out.pixels, phone_vs_server: out.phone_vs_server, phone_text: out.phone_text });

    // 6. the photo flow again, now computed on the phone
    await page.setInputFiles('#photo', cfg.photo_png);
    await page.waitForFunction(() => document.querySelector('#photo-where').textContent.length > 0
      && window.lugha.state.lastPhoto && !window.lugha.state.lastPhoto.query_id);
    out.phone_ui_labels = await page.$$eval('#photo-results li strong', (els) => els.map((e) => e.textContent));
    out.phone_ui_where = await page.textContent('#photo-where');
    step('photo_phone', { labels: out.phone_ui_labels, where: out.phone_ui_where });

    // 7. network off: reload from the service worker's cache and still classify a photo on the phone
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30000 });
    await page.reload(); // once online under the worker, so every asset this page uses passes through it
    await waitReady(page);

    // 6b. words -> photos computed on the phone, in the page (online, so the worker keeps the thumbnails)
    const phoneSearch = async () => {
      await page.click('[data-tab=text]');
      await page.evaluate(() => { window.lugha.state.lastSearch = null; });
      await page.fill('#query', cfg.query);
      await page.click('#text-form button');
      await page.waitForFunction(() => { const s = window.lugha.state.lastSearch; return s && s.where === 'phone'; });
      await page.waitForSelector('#text-results li img');
      return { ids: await page.evaluate(() => window.lugha.state.lastSearch.results.map((r) => r.id)),
               where: await page.textContent('#text-where') };
    };
    const online = await phoneSearch();
    await page.waitForFunction(() => { const i = document.querySelector('#text-results img'); return i.complete && i.naturalWidth > 0; });
    out.phone_ui_text = online.ids;
    out.phone_ui_text_where = online.where;
    step('text_phone', online);
    // the operator's review in /admin: the photo's better caption shown with the photo, then approved
    const admin = await context.newPage();
    await admin.goto(`${cfg.base}/admin`);
    await admin.fill('#pin', cfg.pin);
    await admin.click('#review-load');
    await admin.waitForSelector('#review-list li');
    const item = admin.locator('#review-list li', { hasText: cfg.better_caption });
    await item.locator('img').waitFor();
    await admin.waitForFunction(() => [...document.querySelectorAll('#review-list img')].every((i) => i.complete && i.naturalWidth > 0));
    out.review_photo_width = await item.locator('img').evaluate((img) => img.naturalWidth);
    out.review_items = await admin.$$eval('#review-list li', (els) => els.length);
    await item.locator('button', { hasText: 'Approve' }).click();
    await admin.waitForFunction((c) => ![...document.querySelectorAll('#review-list li')].some((li) => li.textContent.includes(c)),
      cfg.better_caption);
    step('admin_review', { items: out.review_items, photo_width: out.review_photo_width });
    await admin.close();
    await page.click('[data-tab=photo]');
    await context.setOffline(true);
    await page.reload();
    await waitReady(page);
    out.offline_banner = await page.isVisible('#offline');
    await page.waitForFunction(() => window.lugha.phone.isReady(window.lugha.state.config.phone), null, { timeout: 60000 });
    await page.setInputFiles('#photo', cfg.photo_png);
    await page.waitForSelector('#photo-results li');
    out.offline_labels = await page.$$eval('#photo-results li strong', (els) => els.map((e) => e.textContent));
    out.offline_feedback_visible = await page.isVisible('#photo-results li form'); // nothing can be saved offline
    const offline = await phoneSearch();
    out.offline_text_ids = offline.ids;
    out.offline_text_where = offline.where;
    await page.waitForFunction(() => { const i = document.querySelector('#text-results img'); return i.complete; });
    out.offline_text_images_loaded = await page.$$eval('#text-results img', (els) => els.filter((e) => e.complete && e.naturalWidth > 0).length);
    await page.screenshot({ path: cfg.screenshot_offline, fullPage: true });
    step('offline', { banner: out.offline_banner, labels: out.offline_labels, text: offline, images: out.offline_text_images_loaded });
    await context.setOffline(false);
    out.ok = true;
  } catch (err) {
    out.ok = false;
    out.error = String(err && err.stack || err);
    out.status_texts = await page.evaluate(() => Object.fromEntries(['#photo-status', '#text-status', '#phone-status', '#photo-where', '#text-where']
      .map((s) => [s, document.querySelector(s)?.textContent]))).catch(() => null);
    await page.screenshot({ path: cfg.screenshot_failure, fullPage: true }).catch(() => {});
  } finally {
    out.page_errors = errors;
    out.server_labels = out.steps.find((s) => s.name === 'photo_server')?.labels;
    out.feedback_ids = out.steps.filter((s) => s.name.endsWith('feedback') || s.name === 'text_search')
      .map((s) => s.id ?? s.feedback_id);
    writeFileSync(cfg.out, JSON.stringify(out, null, 2));
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
  if (!out.ok) { console.error(out.error); process.exit(1); }
}

main().catch((err) => { console.error(err); process.exit(2); });
