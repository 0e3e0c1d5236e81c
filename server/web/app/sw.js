// Keeps the learner page loadable with the server down: network first (so a deploy is picked
// up at once), the last good copy from the cache when the network fails. The API and the
// WebSocket are never cached: the client's data lives in localStorage, not here.
const CACHE = "learnsync-app-v1";
const SHELL = [
  "/app",
  "/app/app.js",
  "/app/app.css",
  "/app/learnsync.js",
  "/static/style.css",
  "/app/pkg/client_wasm.js",
  "/app/pkg/client_wasm_bg.wasm",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).catch(() => undefined).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  const path = url.pathname === "/app/" ? "/app" : url.pathname;
  if (!SHELL.includes(path)) return;
  event.respondWith(
    fetch(event.request)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((cache) => cache.put(path, copy));
        }
        return res;
      })
      .catch(() => caches.match(path).then((hit) => hit || Response.error())),
  );
});
