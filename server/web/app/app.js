// The learner page over the REST API (the offline client replaces these calls with the
// synced documents of client-wasm).
"use strict";

const api = LearnSyncApi;
const $ = (s) => document.querySelector(s);

function setStatus(text) { $("#sync-status").textContent = text; }

async function start() {
  try {
    await api.get("/api/auth/me");
    $("#login-view").hidden = true;
    $("#learner-view").hidden = false;
    setStatus("online");
    await Promise.all([loadPreferences(), loadMine(), loadCatalog()]);
  } catch (e) {
    setStatus(e.status ? "online" : "offline");
    $("#learner-view").hidden = true;
    $("#login-view").hidden = false;
  }
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api.post("/api/auth/login", { email: $("#login-email").value, password: $("#login-password").value });
    await start();
  } catch (e) { $("#login-error").textContent = e.message; }
});

async function loadPreferences() {
  const p = await api.get("/api/preferences");
  document.documentElement.dataset.theme = p.theme || "system";
  $("#theme").value = p.theme || "system";
  if (p.language) $("#language").value = p.language.startsWith("ru") ? "ru" : "en";
}

for (const key of ["theme", "language"]) {
  $(`#${key}`).addEventListener("change", async (ev) => {
    try {
      await api.patch("/api/preferences", { [key]: ev.target.value });
      if (key === "theme") document.documentElement.dataset.theme = ev.target.value;
    } catch (e) { $("#app-error").textContent = e.message; }
  });
}

async function loadMine() {
  const list = await api.get("/api/enrollments");
  $("#my-courses").innerHTML = list.items.map((e) =>
    `<li>${esc(e.course_id)} — ${esc(e.status)}, ${Math.round(e.progress)} %</li>`).join("") || "<li class=\"muted\">No courses yet.</li>";
}

async function loadCatalog() {
  const q = $("#search").value.trim();
  const page = await api.get(`/api/courses?limit=50${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  $("#catalog").innerHTML = page.items.map((c) =>
    `<li>${esc(c.title)} <button type="button" data-enroll="${esc(c.id)}">Enroll</button></li>`).join("") || "<li class=\"muted\">Nothing found.</li>";
}

$("#search").addEventListener("input", () => loadCatalog().catch((e) => { $("#app-error").textContent = e.message; }));
$("#catalog").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-enroll]");
  if (!b) return;
  try { await api.post("/api/enrollments", { course_id: b.dataset.enroll }); await loadMine(); }
  catch (e) { $("#app-error").textContent = e.message; }
});

start();
