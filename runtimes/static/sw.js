// Offline support. The server stamps VERSION with a hash of every static file, so a changed app
// installs a fresh shell cache. Pages and API reads: network first (fresh when the Pi is reachable),
// the cache when not. Static files: cache first (versioned by the stamp).
const VERSION = '__ASSET_VERSION__';
const SHELL = `lugha-shell-${VERSION}`;
const SHELL_FILES = ['/', '/static/app.css', '/static/app.js', '/static/phone.js', '/static/preprocess.js',
                     '/static/tokenizer.js', '/static/i18n/en.json', '/static/icon.svg', '/manifest.webmanifest'];
// Gallery thumbnails, kept as they are seen: offline text search on the phone shows them. Their URLs
// carry the gallery's index key, so a new gallery never shows an old picture.
const GALLERY = 'lugha-gallery';
const NETWORK_FIRST = ['/', '/admin']; // API reads are left to the page, which knows when it is offline
const TIMEOUT_MS = 4000; // a Pi out of reach on a hotspot hangs rather than fails: do not wait forever

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(SHELL_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('lugha-shell-') && k !== SHELL).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

function withTimeout(promise) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), TIMEOUT_MS))]);
}

async function networkFirst(request) {
  const cache = await caches.open(SHELL);
  try {
    const resp = await withTimeout(fetch(request));
    if (resp.ok) cache.put(request, resp.clone());
    return resp;
  } catch (err) {
    const hit = await caches.match(request, { ignoreSearch: true });
    if (hit) return hit;
    throw err;
  }
}

// cacheName null: answer from any cache (the page's model cache included) but store nothing; used for the
// vendored engine, which the page itself caches (one 14 MB copy, and no second reader of the download).
async function cacheFirst(request, cacheName = SHELL) {
  const hit = await caches.match(request);
  if (hit) return hit;
  const resp = await fetch(request);
  if (resp.ok && cacheName) (await caches.open(cacheName)).put(request, resp.clone());
  return resp;
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (request.mode === 'navigate' || NETWORK_FIRST.includes(url.pathname)) {
    event.respondWith(networkFirst(request));
  } else if (url.pathname.startsWith('/static/vendor/')) {
    event.respondWith(cacheFirst(request, null));
  } else if (url.pathname.startsWith('/static/')) { // the model (/bundle/) is cached by the page itself
    event.respondWith(cacheFirst(request));
  } else if (url.pathname.startsWith('/gallery/') && url.searchParams.has('v')) {
    event.respondWith(cacheFirst(request, GALLERY));
  }
});
