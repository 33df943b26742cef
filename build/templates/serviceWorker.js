// quantcalc service worker: the site's own files, cache-first, from one cache per build.
//
// It never races the page: nothing is pre-cached at install. The Python worker stores every file it downloads
// in this same cache as it goes (build/templates/pyodide_worker.js), and once the calculator is live the page
// copies in what its HTTP cache holds and the rest is downloaded here (see "cache-site" below), so each byte
// crosses the network once. From the next visit on, every request is answered from this cache and the
// page works offline. Only the files listed at build time are cached (the site's own, and Pyodide packages the
// build had to leave on the Pyodide CDN); any other request goes to the network untouched.
const CACHE_PREFIX = `quantcalc-${self.registration.scope}-`;
const CACHE = `${CACHE_PREFIX}__CACHE_VERSION__`;
const SITE_FILES = /*SITE_FILES*/[];
const REMOTE_FILES = /*REMOTE_FILES*/[];
const SCOPE = new URL(self.registration.scope);
const PAGES = new Set(["", "index.html", "__APP_HTML__"]);

function siteKey(url) {
  // -> the cache key for a request URL, or null when the request is not one of the site's files
  const u = new URL(url);
  if (REMOTE_FILES.includes(u.href)) {
    return u.href;
  }
  if (u.origin !== SCOPE.origin || !u.pathname.startsWith(SCOPE.pathname)) {
    return null;
  }
  const file = decodeURIComponent(u.pathname.slice(SCOPE.pathname.length));
  if (PAGES.has(file)) {
    return new URL(file || "index.html", SCOPE).href;   // pages are cached without their query string
  }
  return SITE_FILES.includes(file) ? new URL(file, SCOPE).href : null;
}

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
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
  // only-if-cached: the page copying its HTTP cache into this one ("cache-site" below) must reach that cache
  const key = request.method === 'GET' && request.cache !== 'only-if-cached' ? siteKey(request.url) : null;
  if (key === null) {
    return;   // not ours: the browser handles it as if there were no service worker
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const cached = await cache.match(key);
    if (cached) {
      return cached;
    }
    const response = await fetch(request);
    if (response.ok && (response.type === 'basic' || response.type === 'cors')) {
      cache.put(key, response.clone()).catch(() => {});
    }
    return response;
  })());
});

function wantedUrls() {
  return [...new Set([...PAGES].map((f) => new URL(f || "index.html", SCOPE).href)
    .concat(SITE_FILES.map((f) => new URL(f, SCOPE).href), REMOTE_FILES))];
}

async function missing(cache) {
  const out = [];
  for (const url of wantedUrls()) {
    if (!(await cache.match(url))) {
      out.push(url);
    }
  }
  return out;
}

// "cache-site" (from the page, once the calculator is live): the page first copies into this cache what its
// own HTTP cache holds (it downloaded those files already; a service worker's requests do not see that cache),
// then says "copied", and the files nobody has fetched yet (the PDF library, ...) are downloaded here, once.
self.addEventListener('message', (event) => {
  const type = event.data && event.data.type;
  if (type === 'cache-site' && event.source) {
    event.waitUntil((async () => {
      const cache = await caches.open(CACHE);
      event.source.postMessage({type: 'copy-from-http-cache', cache: CACHE, urls: await missing(cache)});
    })());
  } else if (type === 'copied') {
    event.waitUntil((async () => {
      const cache = await caches.open(CACHE);
      for (const url of await missing(cache)) {
        try {
          const response = await fetch(url);
          if (response.ok) {
            await cache.put(url, response);
          }
        } catch (err) {
          // offline or gone: the next visit tries again
        }
      }
    })());
  }
});
