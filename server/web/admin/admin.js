// The LearnSync admin console: plain JavaScript over the REST API.
"use strict";

const api = LearnSyncApi;
const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------------------------------------
// Login and tabs

async function start() {
  try {
    const me = await api.get("/api/auth/me");
    if (me.role !== "admin") {
      showLogin("This console is for admins. Log in with an admin account.");
      return;
    }
    $("#whoami").textContent = `${me.display_name} (${me.email || me.id})`;
    $("#logout").hidden = false;
    $("#login-view").hidden = true;
    $("#console").hidden = false;
    // Each tab has its address (/admin/migrate, /admin/logs, …): links and reloads land on it.
    const section = location.pathname.replace(/^\/admin\/?/, "").split("/")[0];
    selectTab(tabs.some((t) => t.id === `t-${section}`) ? `t-${section}` : "t-migrate");
  } catch (e) {
    showLogin(e.status === 401 ? "" : e.message);
  }
}

function showLogin(message) {
  $("#console").hidden = true;
  $("#logout").hidden = true;
  $("#whoami").textContent = "";
  $("#login-view").hidden = false;
  $("#login-error").textContent = message || "";
  $("#login-email").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = ""; // the previous attempt's reason is not this one's
  try {
    await api.post("/api/auth/login", { email: $("#login-email").value, password: $("#login-password").value });
    await start();
    // The login button just disappeared with the form: keep keyboard users in the page.
    if (!$("#console").hidden) document.querySelector('[role="tab"][aria-selected="true"]').focus();
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
});

$("#logout").addEventListener("click", async () => {
  try { await api.post("/api/auth/logout"); } catch (e) { if (e.status !== 401) { showError(e); return; } }
  showLogin("You are logged out.");
});

const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
const loaders = {
  "t-migrate": loadRuns,
  "t-sync": loadDevices,
  "t-moderation": loadReports,
  "t-logs": () => loadLogs(false),
  "t-analytics": loadAnalytics,
  "t-users": loadUsers,
};

function selectTab(id) {
  for (const t of tabs) {
    const on = t.id === id;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
  const path = `/admin/${id.slice(2)}`;
  if (location.pathname !== path) history.replaceState(null, "", path);
  showError(null);
  const load = loaders[id];
  if (!load) return;
  // aria-busy while the panel's data loads: assistive technology (and tests) wait for it.
  const panel = document.getElementById(document.getElementById(id).getAttribute("aria-controls"));
  panel.setAttribute("aria-busy", "true");
  load().catch(showError).finally(() => panel.removeAttribute("aria-busy"));
}

tabs.forEach((t, i) => {
  t.addEventListener("click", () => selectTab(t.id));
  t.addEventListener("keydown", (ev) => {
    let next = null;
    if (ev.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
    if (ev.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
    if (ev.key === "Home") next = tabs[0];
    if (ev.key === "End") next = tabs[tabs.length - 1];
    if (next) { ev.preventDefault(); next.focus(); selectTab(next.id); }
  });
});

// Every panel has its own error line (role=alert): a failure shows where the admin is looking.
function showError(e) {
  const target = document.querySelector('[role="tabpanel"]:not([hidden]) .error') || $("#migrate-error");
  if (e && e.status === 401) { showLogin("Your session ended; log in again."); return; }
  target.textContent = e ? e.message : "";
}

// ---------------------------------------------------------------------------------------------
// Migration

let lastRun = null;

$("#migrate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#migrate-error").textContent = "";
  const files = $("#migrate-files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const user = $("#migrate-user").value.trim();
  if (user) form.append("user", user);
  if ($("#migrate-dry").checked) form.append("dry_run", "true");
  $("#migrate-start").disabled = true;
  $("#migrate-progress").hidden = false;
  setProgress(0, files.length, "uploading…");
  let started = null;
  try {
    started = await api.upload("/api/admin/migrations", form);
    // A zip holds many dumps: count what the server found, not the files chosen.
    setProgress(0, started.dumps_total);
    await follow(started.id);
  } catch (e) {
    // Refused before it started (unknown user, bad form): no progress to show.
    if (!started) $("#migrate-progress").hidden = true;
    $("#migrate-error").textContent = e.message;
  } finally {
    $("#migrate-start").disabled = false;
  }
});

function setProgress(done, total, text) {
  const pct = total ? Math.round((100 * done) / total) : 100;
  $("#migrate-bar").value = pct;
  $("#migrate-percent").textContent = `${pct} %`;
  $("#migrate-status").textContent = text || `${done} of ${total} dumps`;
}

// Follows a run's live progress (server-sent events), falling back to polling.
function follow(id) {
  return new Promise((resolve) => {
    const finish = (run) => { showRun(run); loadRuns().catch(showError); resolve(); };
    let source;
    try { source = new EventSource(`/api/admin/migrations/${encodeURIComponent(id)}/events`); } catch (_) { source = null; }
    const poll = async () => {
      const run = await api.get(`/api/admin/migrations/${encodeURIComponent(id)}`);
      setProgress(run.dumps_done, run.dumps_total);
      if (run.status === "running") setTimeout(() => poll().catch(showError), 500); else finish(run);
    };
    if (!source) { poll().catch(showError); return; }
    source.addEventListener("progress", (ev) => {
      const p = JSON.parse(ev.data);
      setProgress(p.done, p.total, p.current ? `${p.done} of ${p.total} dumps — ${p.current}` : undefined);
    });
    source.addEventListener("finished", (ev) => { source.close(); finish(JSON.parse(ev.data)); });
    source.onerror = () => { source.close(); poll().catch(showError); };
  });
}

function showRun(run) {
  lastRun = run;
  setProgress(run.dumps_done, run.dumps_total, `${run.status}${run.dry_run ? " (dry run: nothing changed)" : ""}`);
  const rows = [];
  for (const dump of run.report || []) {
    for (const k of dump.keys || []) {
      rows.push(`<tr><td>${esc(dump.dump)}</td><td><code>${esc(k.key)}</code></td><td><span class="pill ${k.outcome === "skipped" ? "warn" : k.outcome === "failed" ? "bad" : "ok"}">${esc(k.outcome)}</span></td><td>${esc(k.count)}</td><td>${(k.notes || []).map(esc).join("<br>")}</td></tr>`);
    }
    if (dump.error) rows.push(`<tr><td>${esc(dump.dump)}</td><td colspan="4" class="bad">${esc(dump.error)}</td></tr>`);
  }
  $("#migrate-table tbody").innerHTML = rows.join("") || `<tr><td colspan="5" class="muted">Nothing to report.</td></tr>`;
  $("#migrate-results").hidden = false;
  $("#migrate-resync").disabled = run.dry_run || !(run.counts && run.counts.users && run.counts.users.length);
}

$("#migrate-resync").addEventListener("click", async () => {
  if (!lastRun || !lastRun.counts || !lastRun.counts.users) return;
  const users = lastRun.counts.users;
  if (!confirm(`Force a full resync of ${users.length} user(s)?`)) return;
  let done = 0;
  try {
    for (const u of users) {
      await api.post("/api/admin/sync", { user: u });
      done += 1;
    }
    $("#migrate-resync-status").textContent = `resync sent to ${done} user(s)`;
  } catch (e) {
    $("#migrate-resync-status").textContent = `resync sent to ${done} of ${users.length} user(s): ${e.message}`;
  }
});

async function loadRuns() {
  const page = await api.get("/api/admin/migrations?limit=20");
  $("#runs-table tbody").innerHTML = page.items.map((r) => {
    const c = r.counts || {};
    const counts = ["imported", "merged", "skipped", "unchanged"].filter((k) => c[k]).map((k) => `${k} ${c[k]}`)
      .concat(c.dumps_failed ? [`${c.dumps_failed} dump(s) failed`] : []).join(", ");
    return `<tr><td>${fmtTime(r.started_at)}</td><td>${esc(r.source)}</td><td>${esc(r.label)}${r.dry_run ? " (dry run)" : ""}</td><td>${esc(r.status)}</td><td>${r.dumps_done}/${r.dumps_total}</td><td>${esc(counts)}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">No imports yet.</td></tr>`;
}

// ---------------------------------------------------------------------------------------------
// Sync and devices

$("#resync-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("#resync-user").value.trim();
  const who = user === "all" ? "EVERY device of every user" : `every device of user ${user}`;
  if (!confirm(`Force a full resync of ${who}? Unsynced changes on devices are kept and merged.`)) return;
  try {
    const r = await api.post("/api/admin/sync", { user });
    $("#resync-status").textContent = `Sync epoch ${r.epoch}: ${r.devices_notified} connected device(s) told now; offline devices resync when they reconnect.`;
  } catch (e) {
    $("#resync-status").textContent = e.message;
  }
});

$("#devices-refresh").addEventListener("click", () => loadDevices().catch(showError));

async function loadDevices() {
  const devices = await api.get("/api/admin/devices");
  $("#devices-table tbody").innerHTML = devices.map((d) =>
    `<tr><td>${esc(d.user_id)}</td><td>${esc(d.peer_id)}<br><span class="muted">${esc(d.user_agent)}</span></td><td>${esc(d.instance_id)}</td><td>${esc(d.remote_addr)}</td><td>${fmtTime(d.connected_at)}</td><td>${fmtTime(d.last_sync_at)}</td></tr>`
  ).join("") || `<tr><td colspan="6" class="muted">No device is connected.</td></tr>`;
}

// ---------------------------------------------------------------------------------------------
// Moderation

$("#reports-status").addEventListener("change", () => loadReports().catch(showError));

async function loadReports() {
  const status = $("#reports-status").value;
  const page = await api.get(`/api/admin/reports?limit=100${status ? `&status=${status}` : ""}`);
  $("#reports-table tbody").innerHTML = page.items.map((r) => `
    <tr data-id="${esc(r.id)}">
      <td>${fmtTime(r.created_at)}</td><td>${esc(r.course_id)}</td>
      <td>${esc(r.reason)}${r.details ? `<br><span class="muted">${esc(r.details)}</span>` : ""}</td>
      <td>${esc(r.status)}</td><td>${esc(r.note || "")}</td>
      <td>${r.status === "pending" ? `
        <label class="sr-only" for="note-${esc(r.id)}">Note</label>
        <textarea id="note-${esc(r.id)}" rows="2" placeholder="Note"></textarea>
        <button type="button" data-act="resolved">Resolve</button>
        <button type="button" data-act="dismissed">Dismiss</button>` : ""}</td>
    </tr>`).join("") || `<tr><td colspan="6" class="muted">Nothing here.</td></tr>`;
}

$("#reports-table").addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  showError(null);
  const row = btn.closest("tr");
  const id = row.dataset.id;
  const note = row.querySelector("textarea").value.trim();
  try {
    await api.post(`/api/admin/reports/${encodeURIComponent(id)}/resolve`, { status: btn.dataset.act, note: note || null });
    await loadReports();
  } catch (e) { showError(e); }
});

// ---------------------------------------------------------------------------------------------
// Logs

let logsCursor = null;
// The filters of the rows on screen: "Older entries" continues them, whatever the form says now.
let logsShown = null;

$("#logs-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadLogs(false).catch(showError); });
$("#logs-more").addEventListener("click", () => loadLogs(true).catch(showError));

async function loadLogs(more) {
  let params;
  if (more && logsShown && logsCursor) {
    params = new URLSearchParams(logsShown);
    params.set("cursor", logsCursor);
  } else {
    more = false;
    params = new URLSearchParams({ limit: "50" });
    for (const [k, sel] of [["level", "#logs-level"], ["source", "#logs-source"], ["user_id", "#logs-user"]]) {
      const v = $(sel).value.trim();
      if (v) params.set(k, v);
    }
    for (const [k, sel] of [["from", "#logs-from"], ["to", "#logs-to"]]) {
      const v = $(sel).value;
      if (v) params.set(k, new Date(v).toISOString());
    }
  }
  $("#logs-more").disabled = true;
  let page;
  try {
    page = await api.get(`/api/admin/logs?${params}`);
  } finally {
    $("#logs-more").disabled = false;
  }
  const rows = page.items.map((l) =>
    `<tr><td>${fmtTime(l.created_at)}</td><td class="${l.level === "error" ? "bad" : l.level === "warn" ? "warn" : ""}">${esc(l.level)}</td><td>${esc(l.source)}</td><td>${esc(l.message)}${l.context ? `<br><code class="muted">${esc(JSON.stringify(l.context).slice(0, 300))}</code>` : ""}</td><td>${esc(l.user_id || "")}</td></tr>`).join("");
  const body = $("#logs-table tbody");
  if (more) body.insertAdjacentHTML("beforeend", rows); else body.innerHTML = rows || `<tr><td colspan="5" class="muted">No entries.</td></tr>`;
  params.delete("cursor");
  logsShown = params.toString();
  logsCursor = page.next_cursor;
  $("#logs-more").hidden = !logsCursor;
}

// ---------------------------------------------------------------------------------------------
// Analytics: small SVG charts, no library.

function barChart(points, label, max) {
  if (!points.length) return `<p class="muted">No data yet.</p>`;
  const w = 600, h = 200, pad = 28;
  const top = max || Math.max(1, ...points.map((p) => p.value));
  const bw = (w - pad) / points.length;
  const bars = points.map((p, i) => {
    const bh = ((h - pad) * p.value) / top;
    const x = pad + i * bw;
    return `<rect class="bar" x="${x + 1}" y="${h - pad - bh}" width="${Math.max(1, bw - 2)}" height="${bh}"><title>${esc(p.label)}: ${esc(p.value)}</title></rect>` +
      (i % Math.ceil(points.length / 8) === 0 ? `<text x="${x}" y="${h - 10}">${esc(p.label)}</text>` : "");
  }).join("");
  // Screen readers get the figures as text; of a long series, the days with something.
  const spoken = points.length > 31 ? points.filter((p) => p.value) : points;
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(label)}">
    <line class="axis" x1="${pad}" y1="${h - pad}" x2="${w}" y2="${h - pad}"/>
    <text x="0" y="12">${esc(top)}</text><text x="0" y="${h - pad}">0</text>${bars}</svg>
    <p class="sr-only">${spoken.map((p) => `${esc(p.label)}: ${esc(p.value)}`).join("; ") || "all 0"}</p>`;
}

function days(series, count) {
  const byDay = new Map(series.points.map((p) => [p.day, p.count]));
  const out = [];
  const today = new Date();
  for (let i = count - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    const key = d.toISOString().slice(0, 10);
    out.push({ label: count > 31 ? key : key.slice(5), value: byDay.get(key) || 0 });
  }
  return out;
}

$("#analytics-form").addEventListener("change", () => loadAnalytics().catch(showError));
$("#analytics-form").addEventListener("submit", (ev) => ev.preventDefault());

// Enrollments and completions per day (of one course, or all), active users per day, and the
// per-course figures; the course list comes from those figures.
async function loadAnalytics() {
  const period = Number($("#analytics-days").value) || 30;
  const course = $("#analytics-course").value;
  const scope = `days=${period}${course ? `&course_id=${encodeURIComponent(course)}` : ""}`;
  const [enr, comp, active, courses] = await Promise.all([
    api.get(`/api/admin/analytics/enrollments?${scope}`),
    api.get(`/api/admin/analytics/enrollments?${scope}&metric=completions`),
    api.get(`/api/admin/analytics/active-users?days=${period}`),
    api.get("/api/admin/analytics/courses?limit=100"),
  ]);
  const name = (c) => c.title ? `${c.title} (${c.course_id})` : c.course_id;
  $("#analytics-course").innerHTML = `<option value="">All courses</option>` + courses.map((c) =>
    `<option value="${esc(c.course_id)}"${c.course_id === course ? " selected" : ""}>${esc(name(c))}</option>`).join("");
  const of = course ? ` of ${name(courses.find((c) => c.course_id === course) || { course_id: course })}` : "";
  $("#chart-enrollments").innerHTML = barChart(days(enr, period), `Enrollments per day${of}`);
  $("#chart-completions").innerHTML = barChart(days(comp, period), `Completions per day${of}`);
  $("#chart-active").innerHTML = barChart(days(active, period), "Active users per day");
  const top = courses.slice(0, 20);
  $("#chart-progress").innerHTML = barChart(top.map((c) => ({ label: c.title || c.course_id, value: Math.round(c.average_progress) })), "Average progress per course", 100);
  $("#courses-table tbody").innerHTML = top.map((c) =>
    `<tr><td>${esc(c.title || c.course_id)}</td><td><code>${esc(c.course_id)}</code></td><td>${c.enrollments}</td><td>${c.active}</td><td>${c.completed}</td><td>${c.average_progress.toFixed(1)} %</td></tr>`
  ).join("") || `<tr><td colspan="6" class="muted">No enrollments yet.</td></tr>`;
}

// ---------------------------------------------------------------------------------------------
// Users

$("#users-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadUsers().catch(showError); });

async function loadUsers() {
  const params = new URLSearchParams({ limit: "50" });
  if ($("#users-q").value.trim()) params.set("q", $("#users-q").value.trim());
  if ($("#users-role").value) params.set("role", $("#users-role").value);
  const page = await api.get(`/api/admin/users?${params}`);
  $("#users-table tbody").innerHTML = page.items.map((u) => `
    <tr data-id="${esc(u.id)}">
      <td>${esc(u.display_name)}</td><td>${esc(u.email || "(placeholder)")}</td><td>${esc(u.legacy_id || "")}</td>
      <td><label class="sr-only" for="role-${esc(u.id)}">Role</label>
        <select id="role-${esc(u.id)}" data-act="role">${["learner", "teacher", "admin"].map((r) => `<option ${r === u.role ? "selected" : ""}>${r}</option>`).join("")}</select></td>
      <td><button type="button" data-act="toggle">${u.disabled ? "Enable" : "Disable"}</button></td>
      <td><code>${esc(u.id)}</code></td>
    </tr>`).join("") || `<tr><td colspan="6" class="muted">No users.</td></tr>`;
}

$("#users-table").addEventListener("change", async (ev) => {
  const sel = ev.target.closest('select[data-act="role"]');
  if (!sel) return;
  try { await api.patch(`/api/admin/users/${encodeURIComponent(sel.closest("tr").dataset.id)}`, { role: sel.value }); } catch (e) { showError(e); await loadUsers(); }
});

$("#users-table").addEventListener("click", async (ev) => {
  const btn = ev.target.closest('button[data-act="toggle"]');
  if (!btn) return;
  const disabled = btn.textContent === "Disable";
  showError(null);
  try { await api.patch(`/api/admin/users/${encodeURIComponent(btn.closest("tr").dataset.id)}`, { disabled }); await loadUsers(); } catch (e) { showError(e); }
});

start();
