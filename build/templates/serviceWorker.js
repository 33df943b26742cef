// quantcalc service worker: pre-caches every asset of the bundle (list written at build time), then
// answers from the cache first, so after one visit the page works with the network off.
// Compiled Pyodide packages fetched from the Pyodide CDN are cached the first time they load.
const CACHE_PREFIX = `quantcalc-${self.registration.scope}-`;
const CACHE = `${CACHE_PREFIX}__CACHE_VERSION__`;
const PRECACHE = /*PRECACHE*/[];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(PRECACHE.map((url) => new Request(url, {cache: 'reload'})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(CACHE_PREFIX) && name !== CACHE) {
        await caches.delete(name);
      }
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') {
    return;
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const navigate = request.mode === 'navigate';
    const cached = await cache.match(request, {ignoreSearch: navigate});
    if (cached) {
      return cached;
    }
    try {
      const response = await fetch(request);
      if (response.ok && (response.type === 'basic' || response.type === 'cors')) {
        cache.put(request, response.clone());
      }
      return response;
    } catch (err) {
      if (navigate) {
        const shell = await cache.match('./index.html');
        if (shell) {
          return shell;
        }
      }
      throw err;
    }
  })());
});
