// The verifier's service worker: on install it caches the verifier page, its bundle and style sheet, the
// configuration, the trust list and every issuer's revocation list; afterwards every request is tried on the network first (refreshing
// the cache) and answered from the cache when the device is offline.
const CACHE = 'healthpsi-verifier-v1';
const CONFIG_URL = '/api/v1/verifier/config';
const SHELL = ['/verifier', '/static/dist/verifier.js', '/static/css/site.css', '/static/css/verifier.css', CONFIG_URL];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    const config = await (await cache.match(CONFIG_URL)).json();
    await cache.addAll([config.trustlist_url, ...config.revocations_urls]);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (err) {
    const cached = (await cache.match(request))
      || (request.mode === 'navigate' ? await cache.match(request, { ignoreSearch: true }) : undefined);
    if (cached) return cached;
    throw err;
  }
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  event.respondWith(networkFirst(event.request));
});
