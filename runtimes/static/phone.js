// On-phone mode: the bundle's ONNX image and text encoders run by onnxruntime-web (WebAssembly, vendored
// under /static/vendor), text tokenised by tokenizer.js (the bundle's tokenizer.json, run by the vendored
// @huggingface/tokenizers), the gallery's embeddings searched here; every file kept in the Cache API so
// the phone works with no network at all.
import { preprocessBlob } from './preprocess.js';

// One cache per app version (the server's hash of every static file, vendored engine included), so an
// updated onnxruntime-web never runs against a stale glue file; older caches are deleted in prepare().
let MODEL_CACHE = 'lugha-model';
const VENDOR = ['/static/vendor/ort.wasm.min.mjs', '/static/vendor/ort-wasm-simd-threaded.mjs',
                '/static/vendor/ort-wasm-simd-threaded.wasm', '/static/vendor/tokenizers.min.mjs'];

let ort = null;
let session = null;
let loadedKey = null;
const packs = {};
const text = { session: null, key: null, tokenizer: null, gallery: null, reason: null };

export function b64ToFloat32(obj) {
  const bin = atob(obj.data), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

async function sha256Hex(buffer) {
  if (!(globalThis.crypto && crypto.subtle)) return null; // only in a secure context (https, localhost)
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const TRIES = 3;

// A GET from the model cache, else the network (then cached). Works offline once cached. A download cut
// off mid-body (a hotspot dropping, a busy Pi) is tried again twice, 1 s then 3 s later, before giving up.
async function cachedFetch(url, { refresh = false } = {}) {
  const cache = globalThis.caches ? await caches.open(MODEL_CACHE) : null;
  if (cache && !refresh) {
    const hit = await cache.match(url);
    if (hit) return hit;
  }
  for (let attempt = 1; ; attempt++) {
    try {
      const resp = await fetch(url, { cache: 'no-cache' });
      if (!resp.ok) throw Object.assign(new Error(`${url}: HTTP ${resp.status}`), { status: resp.status });
      if (cache) await cache.put(url, resp.clone());
      return resp;
    } catch (err) {
      const retry = attempt < TRIES && (err.status === undefined || err.status === 429 || err.status >= 500);
      if (retry) { await sleep(attempt === 1 ? 1000 : 3000); continue; }
      const hit = cache && (await cache.match(url));
      if (hit) return hit;
      throw err;
    }
  }
}

// A bundle file from the cache or the network, checked against the manifest's SHA-256 (a cached copy of
// an older bundle's file is fetched anew, once).
async function verifiedBytes(file) {
  let bytes, digest;
  for (const refresh of [false, true]) {
    bytes = new Uint8Array(await (await cachedFetch(file.url, { refresh })).arrayBuffer());
    digest = await sha256Hex(bytes);
    if (!digest || digest === file.sha256) break;
  }
  if (digest && digest !== file.sha256) {
    throw new Error(`${file.url.split('/').pop()} does not match the bundle (SHA-256 ${digest.slice(0, 12)}…); try again`);
  }
  return { bytes, verified: digest !== null };
}

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

// Everything a phone downloads for on-phone mode, in bytes (the text model only when the bundle has one).
export function downloadBytes(phone) {
  const t = phone.text && phone.text.available ? phone.text.graph.bytes + phone.text.tokenizer.bytes : 0;
  return phone.graph.bytes + t;
}

// Fetch (or find cached) everything on-phone mode needs; `progress(text)` reports each step. The image
// encoder is required; the text side (tokenizer + text encoder + gallery embeddings) is added when the
// bundle has it, and a failure there leaves photos on the phone and text on the server (textReason()).
export async function prepare(phone, langs, progress = () => {}) {
  if (!phone || !phone.available) throw new Error(phone ? phone.reason : 'no on-phone model');
  MODEL_CACHE = phone.cache || MODEL_CACHE;
  if (globalThis.caches) {
    for (const old of (await caches.keys()).filter((k) => k.startsWith('lugha-model') && k !== MODEL_CACHE)) await caches.delete(old);
  }
  for (const url of VENDOR) { progress(url.split('/').pop()); await cachedFetch(url); }
  progress(`${phone.graph.url.split('/').pop()} (${mb(phone.graph.bytes)})`);
  const { bytes, verified } = await verifiedBytes(phone.graph);
  for (const lang of langs) await labelPack(phone, lang);
  if (!ort) {
    ort = await import('/static/vendor/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = '/static/vendor/';
    ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one thread is predictable on cheap phones
    ort.env.wasm.proxy = false;
  }
  if (loadedKey !== phone.graph.sha256) {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    loadedKey = phone.graph.sha256;
  }
  localStorage.setItem('lugha-phone-ready', phone.graph.sha256);
  try {
    await prepareText(phone, progress);
  } catch (err) {
    text.reason = err.message;
  }
  return { bytes: bytes.length, verified, text: isTextReady(phone), textReason: text.reason };
}

async function prepareText(phone, progress) {
  const t = phone.text;
  if (!t || !t.available) { text.reason = t ? t.reason : 'no text model'; return; }
  progress(`${t.tokenizer.url.split('/').pop()} (${mb(t.tokenizer.bytes)})`);
  const tokJson = JSON.parse(new TextDecoder().decode((await verifiedBytes(t.tokenizer)).bytes));
  // Imported here, not at the top: a server without the vendored files still serves the page.
  const { BundleTokenizer } = await import('./tokenizer.js');
  const tokenizer = new BundleTokenizer(tokJson, t.spec); // UnsupportedTokenizer: text stays on the server
  progress(`${t.graph.url.split('/').pop()} (${mb(t.graph.bytes)})`);
  if (text.key !== t.graph.sha256) {
    const { bytes } = await verifiedBytes(t.graph);
    text.session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    text.key = t.graph.sha256;
  }
  text.tokenizer = tokenizer;
  text.gallery = null;
  if (t.gallery.size) {
    progress(`${t.gallery.size} gallery images`);
    const g = await (await cachedFetch(`${t.gallery.url}?v=${t.gallery.key}`)).json();
    text.gallery = { ...g, vectors: b64ToFloat32(g.embeds), dim: g.embeds.shape[1] };
  }
  text.reason = null;
}

export function isTextReady(phone) {
  return !!(text.session && text.tokenizer && phone && phone.text && phone.text.available && text.key === phone.text.graph.sha256);
}

export function textReason() { return text.reason; }

export function isReady(phone) {
  return !!(session && phone && phone.graph && loadedKey === phone.graph.sha256);
}

export async function labelPack(phone, lang) {
  if (!packs[lang]) {
    const data = await (await cachedFetch(phone.labels[lang])).json();
    const embeds = b64ToFloat32(data.embeds);
    packs[lang] = { labels: data.labels, embeds, dim: data.embeds.shape[1] };
  }
  return packs[lang];
}

export async function runPixels(phone, pixels) {
  const s = phone.preprocess.size;
  const shape = phone.graph.layout === 'NHWC' ? [1, s, s, 3] : [1, 3, s, s];
  const out = await session.run({ pixel_values: new ort.Tensor('float32', pixels, shape) });
  return out.image_embeds.data;
}

export function l2normalize(v) {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.max(Math.sqrt(n), 1e-12);
  return Float32Array.from(v, (x) => x / n);
}

export async function pixelsOf(phone, blob) {
  return preprocessBlob(blob, phone.preprocess, phone.graph.layout);
}

// Photo -> normalised embedding -> top-k labels of a language, all on the phone.
export async function classify(phone, blob, lang, k) {
  const emb = l2normalize(await runPixels(phone, await pixelsOf(phone, blob)));
  const pack = await labelPack(phone, lang);
  const scores = pack.labels.map((_, i) => {
    let s = 0;
    for (let d = 0; d < pack.dim; d++) s += pack.embeds[i * pack.dim + d] * emb[d];
    return s;
  });
  const order = scores.map((s, i) => [s, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k);
  return { embedding: Array.from(emb),
           results: order.map(([s, i], r) => ({ rank: r + 1, label: pack.labels[i], score: Math.round(s * 1e5) / 1e5 })) };
}

// Text -> normalised embedding, on the phone: tokenizer.js, then the text encoder in WebAssembly.
export async function embedText(phone, query) {
  const { ids, mask } = text.tokenizer.encode(query);
  const shape = [1, ids.length];
  const out = await text.session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), shape),
                                       attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask, BigInt), shape) });
  return { embedding: l2normalize(out.text_embeds.data), ids };
}

// Text -> top-k gallery images, all on the phone (the server's EmbeddingIndex.search, same scores).
export async function searchText(phone, query, k) {
  if (!text.gallery) throw new Error('no gallery on this phone');
  const { embedding, ids } = await embedText(phone, query);
  const g = text.gallery;
  const scores = g.ids.map((_, i) => {
    let s = 0;
    for (let d = 0; d < g.dim; d++) s += g.vectors[i * g.dim + d] * embedding[d];
    return s;
  });
  const order = scores.map((s, i) => [s, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k);
  return { embedding: Array.from(embedding), input_ids: ids,
           results: order.map(([s, i], r) => ({ rank: r + 1, id: g.ids[i], name: g.names[i], url: g.urls[i],
                                                 score: Math.round(s * 1e5) / 1e5 })) };
}

const int64Tensor = (t) => new ort.Tensor('int64', BigInt64Array.from(t.data, BigInt), t.shape);

// The bundle's golden samples through the phone's engine, compared as lugha.parity does (max |diff|
// and per-row cosine against the PyTorch reference, with the graph's own tolerance). `which`: image, text.
export async function goldenCheck(phone, which = 'image') {
  const g = await (await fetch(`/api/golden?graph=${which}`, { cache: 'no-store' })).json();
  const [inName, outName] = which === 'text' ? ['input_ids', 'text_embeds'] : ['pixel_values', 'image_embeds'];
  const sess = which === 'text' ? text.session : session;
  const want = b64ToFloat32(g.outputs[outName]);
  const [batch] = g.inputs[inName].shape, dim = g.outputs[outName].shape[1];
  const rowOf = (name, b) => { // one sample of an input, as a [1, ...] tensor
    const t = g.inputs[name], per = t.shape.slice(1).reduce((a, c) => a * c, 1);
    const data = t.dtype === 'int64' ? t.data : b64ToFloat32(t);
    const row = { data: data.slice(b * per, (b + 1) * per), shape: [1, ...t.shape.slice(1)] };
    return t.dtype === 'int64' ? int64Tensor(row) : new ort.Tensor('float32', row.data, row.shape);
  };
  let maxAbs = 0, minCos = 1;
  for (let b = 0; b < batch; b++) {
    const feeds = Object.fromEntries(Object.keys(g.inputs).map((name) => [name, rowOf(name, b)]));
    const got = (await sess.run(feeds))[outName].data, ref = want.subarray(b * dim, (b + 1) * dim);
    let dot = 0, na = 0, nb = 0;
    for (let d = 0; d < dim; d++) {
      maxAbs = Math.max(maxAbs, Math.abs(got[d] - ref[d]));
      dot += got[d] * ref[d]; na += got[d] * got[d]; nb += ref[d] * ref[d];
    }
    minCos = Math.min(minCos, dot / Math.max(Math.sqrt(na * nb), 1e-12));
  }
  const ok = maxAbs <= g.tolerance.max_abs && minCos >= g.tolerance.min_cosine;
  return { graph: g.graph, samples: batch, max_abs: maxAbs, min_cosine: minCos, tolerance: g.tolerance, ok };
}
