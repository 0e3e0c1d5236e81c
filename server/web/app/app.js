// The learner page on the offline-first client (client-wasm + /app/learnsync.js): preferences,
// enrollments and progress live in the synced documents, so everything on this page works with
// the server down; only logging in and refreshing the catalog need it. The catalog is cached in
// localStorage. /app/sw.js keeps the page itself loadable offline.
import init, * as wasm from "/app/pkg/client_wasm.js";
import { createClient } from "/app/learnsync.js";

const CATALOG_KEY = "learnsync:app:catalog";
const $ = (s) => document.querySelector(s);

const TEXT = {
  en: {
    skip: "Skip to content", logout: "Log out", loading: "Loading…", login: "Log in", email: "Email",
    password: "Password", settings: "Settings", theme: "Theme", system: "System", light: "Light",
    dark: "Dark", language: "Language", mine: "My courses", catalog: "Catalog", search: "Search",
    enroll: "Enroll", enrolled: "Enrolled", unenroll: "Unenroll", done: "Done", markDone: "Mark done",
    noCourses: "No courses yet: enroll from the catalog.", nothing: "Nothing found.",
    lessons: (d, n) => `${d} of ${n} lessons done`, lessonsDone: (d) => `${d} lessons done`, cached: "Offline: showing the saved catalog.",
    noCatalog: "The catalog has not been loaded on this device yet.",
    offline: "offline", connecting: "connecting", syncing: "syncing", synced: "synced",
    relogin: "Your session has ended: log in again to sync. Your changes are kept on this device.",
  },
  ru: {
    skip: "К содержимому", logout: "Выйти", loading: "Загрузка…", login: "Войти", email: "Почта",
    password: "Пароль", settings: "Настройки", theme: "Тема", system: "Системная", light: "Светлая",
    dark: "Тёмная", language: "Язык", mine: "Мои курсы", catalog: "Каталог", search: "Поиск",
    enroll: "Записаться", enrolled: "Вы записаны", unenroll: "Отписаться", done: "Пройден",
    markDone: "Отметить", noCourses: "Пока нет курсов: запишитесь в каталоге.", nothing: "Ничего не найдено.",
    lessons: (d, n) => `Пройдено уроков: ${d} из ${n}`, lessonsDone: (d) => `Пройдено уроков: ${d}`, cached: "Нет сети: показан сохранённый каталог.",
    noCatalog: "Каталог ещё не загружен на этом устройстве.",
    offline: "офлайн", connecting: "подключение", syncing: "синхронизация", synced: "синхронизировано",
    relogin: "Сеанс завершён: войдите снова для синхронизации. Изменения сохранены на этом устройстве.",
  },
};

let client = null;
let catalog = readCatalog();
let catalogOffline = false;
/** The server said "not signed in": the login form shows (next to the data, if any). */
let needLogin = false;

function t(key, ...args) {
  const lang = document.documentElement.lang === "ru" ? "ru" : "en";
  const v = TEXT[lang][key] ?? TEXT.en[key];
  return typeof v === "function" ? v(...args) : v;
}

/** Replaces an element's markup only when it changed: status events re-render often, and a
 * replaced button loses the keyboard focus (and a click in flight). */
const rendered = new WeakMap();
function setHtml(el, html) {
  if (rendered.get(el) === html) return;
  el.innerHTML = html;
  rendered.set(el, html);
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function showError(e) {
  $("#app-error").textContent = e ? String(e.message || e) : "";
}

function readCatalog() {
  try {
    const v = JSON.parse(localStorage.getItem(CATALOG_KEY) || "null");
    return Array.isArray(v) ? v : null;
  } catch (e) {
    return null;
  }
}

async function api(method, path, body) {
  const headers = {};
  const m = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]+)/);
  if (method !== "GET" && m) headers["X-CSRF-Token"] = decodeURIComponent(m[1]);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

async function refreshCatalog() {
  try {
    const page = await api("GET", "/api/courses?limit=100");
    catalog = (page.items || []).map((c) => ({ id: c.id, title: c.title, description: c.description, lessons: c.lessons || [] }));
    catalogOffline = false;
    try { localStorage.setItem(CATALOG_KEY, JSON.stringify(catalog)); } catch (e) { /* quota: keep it in memory */ }
  } catch (e) {
    catalogOffline = true;
  }
  render();
}

// ------------------------------------------------------------------------------------------------
// Rendering

function applyPreferences() {
  const prefs = client ? client.preferences() : {};
  const theme = ["light", "dark", "system"].includes(prefs.theme) ? prefs.theme : "system";
  const lang = typeof prefs.language === "string" && prefs.language.startsWith("ru") ? "ru" : "en";
  document.documentElement.dataset.theme = theme;
  document.documentElement.lang = lang;
  if (document.activeElement !== $("#theme")) $("#theme").value = theme;
  if (document.activeElement !== $("#language")) $("#language").value = lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}

function courseInfo(id) {
  return (catalog || []).find((c) => c.id === id) || { id, title: id, lessons: [] };
}

function renderMine() {
  const mine = (client ? client.enrollments() : []).filter((e) => e.status === "active");
  setHtml($("#my-courses"), mine.map((e) => {
    const info = courseInfo(e.courseId);
    const p = e.progress || { completed: {}, progress: 0 };
    const done = Object.keys(p.completed || {});
    const percent = Math.round(p.progress || 0);
    const lessons = info.lessons.map((l) => {
      const isDone = done.includes(l.id);
      return `<li data-lesson="${esc(l.id)}" class="${isDone ? "done" : ""}"><span>${esc(l.title)}</span>${
        isDone
          ? `<span aria-label="${esc(t("done"))}">✓ ${esc(t("done"))}</span>`
          : `<button type="button" data-complete="${esc(e.courseId)}" data-lesson-id="${esc(l.id)}" aria-label="${esc(t("markDone"))}: ${esc(l.title)}">${esc(t("markDone"))}</button>`
      }</li>`;
    }).join("");
    return `<li data-course="${esc(e.courseId)}">
      <div class="course-head"><strong>${esc(info.title)}</strong>
        <button type="button" data-unenroll="${esc(e.courseId)}" aria-label="${esc(t("unenroll"))}: ${esc(info.title)}">${esc(t("unenroll"))}</button></div>
      <progress max="100" value="${percent}" aria-label="${esc(info.title)}">${percent} %</progress>
      <span class="progress-text">${percent} % · ${esc(info.lessons.length ? t("lessons", done.length, info.lessons.length) : t("lessonsDone", done.length))}</span>
      <ul class="lessons">${lessons}</ul></li>`;
  }).join("") || `<li class="muted">${esc(t("noCourses"))}</li>`);
}

function renderCatalog() {
  const q = $("#search").value.trim().toLowerCase();
  const active = new Set((client ? client.enrollments() : []).filter((e) => e.status === "active").map((e) => e.courseId));
  $("#catalog-note").textContent = !catalog ? t("noCatalog") : catalogOffline ? t("cached") : "";
  const items = (catalog || []).filter((c) => !q || c.title.toLowerCase().includes(q) || String(c.description || "").toLowerCase().includes(q));
  setHtml($("#catalog"), items.map((c) => `<li data-catalog="${esc(c.id)}"><div class="course-head"><span>${esc(c.title)}</span>${
    active.has(c.id)
      ? `<span class="muted">${esc(t("enrolled"))}</span>`
      : `<button type="button" data-enroll="${esc(c.id)}" aria-label="${esc(t("enroll"))}: ${esc(c.title)}">${esc(t("enroll"))}</button>`
  }</div></li>`).join("") || (catalog ? `<li class="muted">${esc(t("nothing"))}</li>` : ""));
}

function renderStatus(status) {
  const pill = $("#sync-status");
  pill.dataset.status = status;
  pill.textContent = t(status) || status;
}

function render() {
  if (!client) return;
  applyPreferences();
  renderStatus(client.status);
  if (client.ready) {
    $("#loading").hidden = true;
    $("#login-view").hidden = !needLogin;
    $("#learner-view").hidden = false;
    $("#logout").hidden = false;
    renderMine();
    renderCatalog();
  }
}

// ------------------------------------------------------------------------------------------------
// Actions

function act(f) {
  try {
    showError(null);
    f();
  } catch (e) {
    showError(e);
  }
  render();
}

$("#theme").addEventListener("change", (ev) => act(() => client.setTheme(ev.target.value)));
$("#language").addEventListener("change", (ev) => act(() => client.setLanguage(ev.target.value)));
$("#search").addEventListener("input", () => renderCatalog());

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b || !client) return;
  if (b.dataset.enroll) {
    act(() => client.enroll(b.dataset.enroll));
    // Keyboard users keep their place: focus moves to the course in "My courses".
    document.querySelector(`#my-courses [data-course="${CSS.escape(b.dataset.enroll)}"] button`)?.focus();
  } else if (b.dataset.unenroll) {
    act(() => client.unenroll(b.dataset.unenroll));
  } else if (b.dataset.complete) {
    const courseId = b.dataset.complete;
    act(() => {
      client.completeLesson(courseId, b.dataset.lessonId);
      const e = client.enrollments().find((x) => x.courseId === courseId);
      const total = courseInfo(courseId).lessons.length;
      const done = e && e.progress ? Object.keys(e.progress.completed || {}).length : 0;
      if (total > 0) client.setProgress(courseId, Math.min(100, (100 * done) / total));
    });
    document.querySelector(`#my-courses [data-course="${CSS.escape(courseId)}"] button[data-complete]`)?.focus();
  }
});

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api("POST", "/api/auth/login", { email: $("#login-email").value, password: $("#login-password").value });
    needLogin = false;
    $("#login-view").hidden = client.ready;
    client.reconnectNow();
    refreshCatalog();
  } catch (e) {
    $("#login-error").textContent = e.status ? e.message : "The server cannot be reached.";
  }
});

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/auth/logout", {}); } catch (e) { /* offline: forget locally anyway */ }
  client.close();
  // This device forgets the account: its documents stay on the server.
  const keys = [];
  for (let i = 0; i < localStorage.length; i++) keys.push(localStorage.key(i));
  for (const k of keys) if (k && (k.startsWith("learnsync:doc:") || k === "learnsync:ids" || k === "learnsync:epoch")) localStorage.removeItem(k);
  location.reload();
});

// ------------------------------------------------------------------------------------------------
// Start

async function start() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app" }).catch(() => { /* page still works online */ });
  }
  await init();
  // The last events, for people debugging a page (and the e2e tests' failure messages).
  const log = (window.learnsyncLog = []);
  const note = (type) => (v) => {
    log.push({ type, v, at: Date.now() });
    if (log.length > 200) log.shift();
  };
  client = await createClient({
    wasm,
    url: location.origin,
    on: {
      import: (e) => {
        note("import")(e);
        // The server's import adds the legacy courses to the catalog: show their titles.
        if (e.phase === "posted") refreshCatalog();
      },
      resynced: note("resynced"),
      serverStatus: note("serverStatus"),
      status: (s) => {
        note("status")(s);
        render();
      },
      change: () => render(),
      error: (e) => {
        note("error")(e);
        if (e.kind === "auth") {
          // Not signed in (or the session expired): the page keeps working from this device's
          // copy; logging in again resumes the sync.
          needLogin = true;
          $("#loading").hidden = true;
          $("#login-view").hidden = false;
          if (client && client.ready) $("#login-error").textContent = t("relogin");
        } else {
          showError(e.message);
        }
      },
    },
  });
  window.learnsync = client;
  render();
  if (!client.ready) {
    // Not logged in on this device yet: ask the server whether a session exists.
    try {
      await api("GET", "/api/auth/me");
    } catch (e) {
      $("#loading").hidden = true;
      $("#login-view").hidden = client.ready;
    }
  }
  window.appReady = true;
  refreshCatalog();
}

start().catch((e) => {
  $("#loading").hidden = true;
  showError(e);
});
