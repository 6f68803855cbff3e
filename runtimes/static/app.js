// The field app's page: consent, photo -> words, words -> photos, judgments, on-phone mode.
// Plain ES modules, no framework, no network beyond this server: everything it loads is vendored.
import * as phone from './phone.js';
import * as preprocess from './preprocess.js';

const $ = (sel) => document.querySelector(sel);
const state = { config: null, strings: {}, english: {}, lang: null, offline: false, uploads: new Map(), onPhone: false };
window.lugha = { state, phone, preprocess }; // the browser tests drive these directly

const t = (key, vars = {}) => (state.strings[key] || state.english[key] || key)
  .replace(/\{(\w+)\}/g, (_, v) => (v in vars ? vars[v] : `{${v}}`));

async function getJSON(url) {
  const resp = await fetch(url, { cache: 'no-store' });
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  return resp.json();
}

async function post(url, body, headers = {}) {
  const json = !(body instanceof Blob);
  const resp = await fetch(url, {
    method: 'POST', body: json ? JSON.stringify(body) : body, credentials: 'same-origin',
    headers: { 'X-CSRF-Token': state.config.csrf, 'Content-Type': json ? 'application/json' : (body.type || 'application/octet-stream'), ...headers },
  });
  const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

// --- configuration, languages, translations ----------------------------------------------------
async function loadConfig() {
  try {
    state.config = await getJSON('/api/config');
    localStorage.setItem('lugha-config', JSON.stringify({ ...state.config, csrf: null }));
    state.offline = false;
  } catch (err) {
    const saved = localStorage.getItem('lugha-config');
    if (!saved) throw err;
    state.config = JSON.parse(saved);
    state.offline = true;
  }
}

async function loadStrings(code) {
  const ui = state.config.ui_languages.includes(code) ? code : 'en';
  const fetchStrings = async (c) => { try { return await getJSON(`/static/i18n/${c}.json`); } catch { return {}; } };
  state.english = await fetchStrings('en');
  state.strings = ui === 'en' ? state.english : await fetchStrings(ui);
  document.documentElement.lang = ui;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
}

function languageName(code, fallback) {
  try { return new Intl.DisplayNames([code], { type: 'language' }).of(code) || fallback; } catch { return fallback; }
}

function fillLanguageSelect(select, chosen) {
  select.replaceChildren(...state.config.languages.map(({ code, name }) => {
    const opt = new Option(`${languageName(code, name)} (${code})`, code);
    opt.selected = code === chosen;
    return opt;
  }));
}

async function setLanguage(code) {
  state.lang = code;
  localStorage.setItem('lugha-lang', code);
  await loadStrings(code);
  renderStatus();
}

// --- status line, consent --------------------------------------------------------------------------
function renderStatus() {
  const cfg = state.config;
  $('#offline').hidden = !state.offline;
  $('#consent-status').textContent = cfg.consent ? t('consent_given') : t('consent_not_given');
  const p = cfg.phone || {};
  $('#phone-box').hidden = !p.available;
  $('#phone-unavailable').hidden = !!p.available;
  if (p.available) {
    $('#phone-size').textContent = t('on_phone_download', { size: `${(phone.downloadBytes(p) / 1e6).toFixed(1)} MB` });
    $('#phone-toggle').checked = state.onPhone;
    $('#phone-check').hidden = !phone.isReady(p) || state.offline;
  }
  $('#admin-link').hidden = !cfg.admin || state.offline;
}

function showConsent() {
  const decided = cfg => cfg.consent || localStorage.getItem('lugha-consent-declined') === '1';
  $('#consent').hidden = decided(state.config) || state.offline;
  $('#main').hidden = !$('#consent').hidden;
  fillLanguageSelect($('#tester-lang'), state.lang);
}

async function giveConsent(agree) {
  if (agree) {
    const res = await post('/api/consent', { agree: true, tester_lang: $('#tester-lang').value });
    state.config.consent = res.consent;
  } else {
    localStorage.setItem('lugha-consent-declined', '1');
  }
  showConsent();
  renderStatus();
}

// --- results and judgments --------------------------------------------------------------------------
function feedbackForm(base) {
  const form = $('#feedback-tpl').content.firstElementChild.cloneNode(true);
  for (const el of form.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of form.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  form.querySelector('input[name=caption]').lang = state.lang; // keyboards and spell-check follow it
  const choice = { correct: null, appropriate: null };
  for (const btn of form.querySelectorAll('button[data-field]')) {
    btn.addEventListener('click', () => {
      choice[btn.dataset.field] = btn.dataset.value === 'true';
      form.classList.remove('collapsed');
      for (const b of form.querySelectorAll(`button[data-field="${btn.dataset.field}"]`)) b.setAttribute('aria-pressed', String(b === btn));
    });
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const status = form.querySelector('.fb-status');
    const caption = form.querySelector('input[name=caption]').value.trim();
    status.textContent = t('working');
    try {
      const extra = await base();
      const res = await post('/api/feedback', { ...extra, ...choice, better_caption: caption || null });
      status.textContent = `${t('saved')} (#${res.id})`;
      form.dataset.saved = res.id;
    } catch (err) {
      status.textContent = `${t('send_failed')}: ${err.message}`;
    }
  });
  if (!state.config.consent || state.offline) form.hidden = true;
  return form;
}

function scoreBar(score) {
  const bar = document.createElement('span');
  bar.className = 'score';
  bar.style.setProperty('--w', `${Math.max(0, Math.min(1, (score + 1) / 2)) * 100}%`);
  bar.title = `${t('score')} ${score.toFixed(3)}`;
  return bar;
}

function renderPhotoResults(data, file, where) {
  const list = $('#photo-results');
  list.replaceChildren();
  $('#photo-where').textContent = t(where === 'phone' ? 'ran_on_phone' : 'ran_on_server');
  for (const r of data.results) {
    const li = document.createElement('li');
    const head = document.createElement('div');
    head.className = 'result-head';
    const label = document.createElement('strong');
    label.textContent = r.label;
    head.append(label, scoreBar(r.score));
    li.append(head, feedbackForm(async () => ({
      mode: 'image', lang: data.lang, result: r.label, rank: r.rank, score: r.score, on_phone: where === 'phone',
      query_id: data.query_id || (await uploadOnce(file)),
    })));
    list.append(li);
  }
  if (!data.results.length) list.textContent = t('no_results');
}

async function uploadOnce(file) {
  if (!state.uploads.has(file)) state.uploads.set(file, (await post('/api/upload', file)).query_id);
  return state.uploads.get(file);
}

async function onPhoto(file) {
  if (!file) return;
  $('#preview').src = URL.createObjectURL(file);
  $('#preview').hidden = false;
  $('#photo-status').textContent = t('working');
  const k = state.config.engine.k;
  try {
    let data, where;
    if (state.onPhone && phone.isReady(state.config.phone)) {
      data = { ...(await phone.classify(state.config.phone, file, state.lang, k)), lang: state.lang };
      where = 'phone';
    } else {
      data = await post(`/api/image?lang=${encodeURIComponent(state.lang)}&k=${k}`, file);
      where = 'server';
    }
    state.lastPhoto = data;
    renderPhotoResults(data, file, where);
    $('#photo-status').textContent = '';
  } catch (err) {
    $('#photo-status').textContent = `${t('error')}: ${err.message}`;
  }
}

async function onSearch(text) {
  const grid = $('#text-results');
  const onPhone = state.onPhone && phone.isTextReady(state.config.phone);
  if (state.offline && !onPhone) { $('#text-status').textContent = t('offline'); return; }
  $('#text-status').textContent = t('working');
  try {
    const k = state.config.engine.k;
    const data = onPhone ? { ...(await phone.searchText(state.config.phone, text, k)), lang: state.lang }
      : await post('/api/text', { text, lang: state.lang, k });
    state.lastSearch = { ...data, where: onPhone ? 'phone' : 'server' };
    $('#text-where').textContent = t(onPhone ? 'ran_on_phone' : 'ran_on_server');
    grid.replaceChildren();
    for (const r of data.results) {
      const li = document.createElement('li');
      const img = document.createElement('img');
      img.src = r.url; img.alt = r.name; img.loading = 'lazy';
      li.append(img, scoreBar(r.score), feedbackForm(async () => ({
        mode: 'text', lang: data.lang, query_text: text, result: r.id, rank: r.rank, score: r.score, on_phone: onPhone })));
      grid.append(li);
    }
    $('#text-status').textContent = data.results.length ? '' : t('no_results');
  } catch (err) {
    const why = state.offline ? t('offline') : `${t('error')}: ${err.message}`;
    $('#text-status').textContent = state.config.engine.gallery_size ? why : t('no_gallery');
  }
}

// --- on-phone mode ------------------------------------------------------------------------------------
async function enablePhone(on) {
  state.onPhone = on;
  localStorage.setItem('lugha-on-phone', on ? '1' : '0');
  if (!on) return renderStatus();
  const status = $('#phone-status');
  try {
    await phone.prepare(state.config.phone, state.config.languages.map((l) => l.code), (step) => { status.textContent = `${t('working')} ${step}`; });
    status.textContent = t('on_phone_ready');
  } catch (err) {
    status.textContent = `${t('error')}: ${err.message}`;
    state.onPhone = false;
  }
  renderStatus();
}

// The golden samples of every graph on the phone (image, and text when it runs here); returns the image
// result with the text one under .text.
async function checkPhone() {
  const out = $('#phone-status');
  out.textContent = t('working');
  const res = await phone.goldenCheck(state.config.phone, 'image');
  const all = [res];
  if (phone.isTextReady(state.config.phone)) all.push(res.text = await phone.goldenCheck(state.config.phone, 'text'));
  const ok = all.every((r) => r.ok);
  out.textContent = `${ok ? t('check_ok') : t('check_fail')}: ` + all.map((r) =>
    `${r.graph.split('/')[0]} max |Δ| ${r.max_abs.toExponential(2)}, cos ${r.min_cosine.toFixed(5)}`).join('; ');
  return res;
}
window.lugha.checkPhone = checkPhone;
window.lugha.enablePhone = enablePhone;

function showTab(name) {
  for (const b of document.querySelectorAll('.tabs button')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  $('#tab-photo').hidden = name !== 'photo';
  $('#tab-text').hidden = name !== 'text';
}

async function main() {
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
  await loadConfig();
  const langs = state.config.languages.map((l) => l.code);
  const saved = localStorage.getItem('lugha-lang');
  state.lang = langs.includes(saved) ? saved : (langs.find((c) => navigator.language.startsWith(c)) || langs[0]);
  fillLanguageSelect($('#lang'), state.lang);
  await loadStrings(state.lang);
  state.onPhone = localStorage.getItem('lugha-on-phone') === '1';
  if (state.onPhone && state.config.phone && state.config.phone.available) await enablePhone(true);
  $('#lang').addEventListener('change', (ev) => setLanguage(ev.target.value));
  $('#consent-agree').addEventListener('click', () => giveConsent(true));
  $('#consent-decline').addEventListener('click', () => giveConsent(false));
  $('#photo').addEventListener('change', (ev) => { onPhoto(ev.target.files[0]); ev.target.value = ''; }); // same photo again fires change
  $('#text-form').addEventListener('submit', (ev) => { ev.preventDefault(); onSearch($('#query').value.trim()); });
  $('#phone-toggle').addEventListener('change', (ev) => enablePhone(ev.target.checked));
  $('#phone-check').addEventListener('click', checkPhone);
  for (const b of document.querySelectorAll('.tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
  window.addEventListener('offline', () => { state.offline = true; renderStatus(); });
  showTab('photo');
  showConsent();
  renderStatus();
  document.body.dataset.ready = '1';
}

main().catch((err) => {
  document.body.dataset.ready = 'error';
  $('#fatal').hidden = false;
  $('#fatal').textContent = `Lugha: ${err.message}`;
});
