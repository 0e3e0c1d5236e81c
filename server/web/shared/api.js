// A tiny client for the LearnSync REST API shared by /admin and /app: JSON in and out, the
// CSRF header on writes, and errors turned into Error objects with the server's message.
"use strict";

const LearnSyncApi = (() => {
  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function request(method, path, body) {
    const headers = {};
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    const res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!res.ok) {
      const message = data && data.error ? data.error.message : `${res.status} ${res.statusText}`;
      const err = new Error(message);
      err.status = res.status;
      err.code = data && data.error ? data.error.code : "http";
      throw err;
    }
    return data;
  }

  return {
    get: (p) => request("GET", p),
    post: (p, b) => request("POST", p, b === undefined ? {} : b),
    patch: (p, b) => request("PATCH", p, b),
    put: (p, b) => request("PUT", p, b),
    del: (p) => request("DELETE", p),
    upload: (p, form) => request("POST", p, form),
  };
})();

// Escapes text for safe insertion into HTML.
function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? esc(t) : d.toLocaleString();
}
