// On-phone mode: the bundle's ONNX image encoder run by onnxruntime-web (WebAssembly, vendored under
// /static/vendor), its files kept in the Cache API so the phone works with no network at all.
// Text is still embedded by the server (the tokenizer is not ported): only photos run on the phone.
import { preprocessBlob } from './preprocess.js';

// One cache per app version (the server's hash of every static file, vendored engine included), so an
// updated onnxruntime-web never runs against a stale glue file; older caches are deleted in prepare().
let MODEL_CACHE = 'lugha-model';
const VENDOR = ['/static/vendor/ort.wasm.min.mjs', '/static/vendor/ort-wasm-simd-threaded.mjs',
                '/static/vendor/ort-wasm-simd-threaded.wasm'];

let ort = null;
let session = null;
let loadedKey = null;
const packs = {};

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

// A GET from the model cache, else the network (then cached). Works offline once cached.
async function cachedFetch(url, { refresh = false } = {}) {
  const cache = globalThis.caches ? await caches.open(MODEL_CACHE) : null;
  if (cache && !refresh) {
    const hit = await cache.match(url);
    if (hit) return hit;
  }
  try {
    const resp = await fetch(url, { cache: 'no-cache' });
    if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
    if (cache) await cache.put(url, resp.clone());
    return resp;
  } catch (err) {
    const hit = cache && (await cache.match(url));
    if (hit) return hit;
    throw err;
  }
}

// Fetch (or find cached) everything on-phone mode needs; `progress(text)` reports each step.
export async function prepare(phone, langs, progress = () => {}) {
  if (!phone || !phone.available) throw new Error(phone ? phone.reason : 'no on-phone model');
  MODEL_CACHE = phone.cache || MODEL_CACHE;
  if (globalThis.caches) {
    for (const old of (await caches.keys()).filter((k) => k.startsWith('lugha-model') && k !== MODEL_CACHE)) await caches.delete(old);
  }
  for (const url of VENDOR) { progress(url.split('/').pop()); await cachedFetch(url); }
  progress(`${phone.graph.url.split('/').pop()} (${(phone.graph.bytes / 1e6).toFixed(1)} MB)`);
  let bytes, digest;
  for (const refresh of [false, true]) { // a cached copy of an older bundle's graph is fetched anew, once
    bytes = new Uint8Array(await (await cachedFetch(phone.graph.url, { refresh })).arrayBuffer());
    digest = await sha256Hex(bytes);
    if (!digest || digest === phone.graph.sha256) break;
  }
  if (digest && digest !== phone.graph.sha256) {
    throw new Error(`model file does not match the bundle (SHA-256 ${digest.slice(0, 12)}…); try again`);
  }
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
  return { bytes: bytes.length, verified: digest !== null };
}

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

// The bundle's golden samples through the phone's engine, compared as lugha.parity does (max |diff|
// and per-row cosine against the PyTorch reference, with the graph's own tolerance).
export async function goldenCheck(phone) {
  const g = await (await fetch('/api/golden', { cache: 'no-store' })).json();
  const input = g.inputs.pixel_values, want = b64ToFloat32(g.outputs.image_embeds);
  const [batch] = input.shape, per = input.shape.slice(1).reduce((a, b) => a * b, 1);
  const dim = g.outputs.image_embeds.shape[1], all = b64ToFloat32(input);
  let maxAbs = 0, minCos = 1;
  for (let b = 0; b < batch; b++) {
    const out = await session.run({ pixel_values: new ort.Tensor('float32', all.slice(b * per, (b + 1) * per), [1, ...input.shape.slice(1)]) });
    const got = out.image_embeds.data, ref = want.subarray(b * dim, (b + 1) * dim);
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
