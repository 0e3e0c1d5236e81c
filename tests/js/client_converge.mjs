// Two LearnSync clients of one user (client-wasm/pkg-node + client-wasm/js/learnsync.js) against
// a real server: both edit, both converge; then a restart with no server loads the same state
// from storage, corrupt stored bytes are reported and fetched again, and a full storage is
// reported without stopping sync. Run by tests/tests/client_node.rs.
//
//   node client_converge.mjs <pkg-node dir> <learnsync.js> <server url> <token> <dead url>
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

import WebSocket from "ws";

import { commands, emit, log, run } from "./lib/harness.mjs";

const WAIT_MS = 20000;

async function until(what, cond) {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

run(async () => {
  const [pkgDir, glue, url, token, deadUrl] = process.argv.slice(2);
  const require = createRequire(import.meta.url);
  const wasm = require(path.resolve(pkgDir, "client_wasm.js"));
  const { createClient, MemoryStorage } = await import(pathToFileURL(path.resolve(glue)).href);

  const open = async (storage, base = url) => {
    const events = [];
    const on = {};
    for (const type of ["status", "change", "error", "import", "resynced"]) on[type] = (v) => events.push({ type, v });
    const c = await createClient({ wasm, url: base, token, storage, WebSocket, on });
    c.events = events;
    return c;
  };
  const storeA = new MemoryStorage();
  const storeB = new MemoryStorage();
  const a = await open(storeA);
  const b = await open(storeB);
  await until("both synced", () => a.status === "synced" && b.status === "synced");

  // Edits on both at the same time.
  a.setTheme("dark");
  a.enroll("c1");
  a.completeLesson("c1", "l1");
  a.setProgress("c1", 50);
  b.setLanguage("de");
  b.setPreference("fontSize", 18);
  b.enroll("c2");
  b.addTime("c2", 30);
  const done = (c) => {
    const p = c.preferences();
    const e = c.enrollments();
    const c1 = e.find((x) => x.courseId === "c1");
    const c2 = e.find((x) => x.courseId === "c2");
    return p.theme === "dark" && p.language === "de" && p.fontSize === 18 &&
      c1?.progress?.completed?.l1 && c1.progress.progress === 50 && c2?.progress?.timeSpentSecs === 30;
  };
  await until("A and B converge", () => done(a) && done(b));
  const remoteChangeSeen = a.events.some((e) => e.type === "change" && !e.v.local) &&
    b.events.some((e) => e.type === "change" && !e.v.local);
  const flushed = [await a.flush(), await b.flush()];
  const statuses = a.events.filter((e) => e.type === "status").map((e) => e.v);
  emit({
    type: "converged",
    a: { preferences: a.preferences(), enrollments: a.enrollments() },
    b: { preferences: b.preferences(), enrollments: b.enrollments() },
    remoteChangeSeen,
    flushed,
    statuses,
  });
  a.close();

  // A again, the server unreachable: everything from storage.
  const offline = await open(storeA, deadUrl);
  await new Promise((r) => setTimeout(r, 200));
  emit({ type: "offline", status: offline.status, preferences: offline.preferences(), enrollments: offline.enrollments() });
  // An edit made offline is kept in storage for later.
  offline.completeLesson("c1", "l2");
  offline.close();

  // Corrupt bytes in storage: reported, dropped, and the state comes back from the server.
  const corrupt = new MemoryStorage(Object.fromEntries(storeA.map));
  const docKeys = Array.from(corrupt.map.keys()).filter((k) => k.startsWith("learnsync:doc:"));
  // Not base64 at all, then base64 of bytes that are not Automerge.
  docKeys.forEach((k, i) => corrupt.setItem(k, i === 0 ? "!!" : "bm90IGF1dG9tZXJnZQ=="));
  const c = await open(corrupt);
  await until("recovered from the server", () => c.status === "synced" && c.preferences().theme === "dark" &&
    c.enrollments().some((x) => x.courseId === "c2"));
  emit({
    type: "corrupt",
    errors: c.events.filter((e) => e.type === "error").map((e) => e.v.kind),
    preferences: c.preferences(),
    courses: c.enrollments().map((x) => x.courseId).sort(),
  });
  c.close();

  // The offline edit of A (lesson l2) reaches the server when A comes back.
  const back = await open(storeA);
  await until("A's offline edit synced", () => back.status === "synced");
  await until("B sees A's offline edit", () => b.enrollments().find((x) => x.courseId === "c1")?.progress?.completed?.l2);
  back.close();

  // A full storage: an error event, sync goes on.
  const full = new MemoryStorage();
  let writes = 0;
  const setItem = full.setItem.bind(full);
  full.setItem = (k, v) => {
    if (k.startsWith("learnsync:doc:") && ++writes > 1) {
      const e = new Error("The quota has been exceeded.");
      e.name = "QuotaExceededError";
      throw e;
    }
    setItem(k, v);
  };
  const q = await open(full);
  await until("synced with a full storage", () => q.status === "synced" && q.preferences().theme === "dark");
  q.setTheme("light");
  await until("B sees the theme from the full-storage device", () => b.preferences().theme === "light");
  emit({ type: "quota", errors: q.events.filter((e) => e.type === "error").map((e) => e.v.kind) });
  q.close();

  // A forced sync: B (connected) resyncs at once; a device that was offline meanwhile resyncs at
  // its next handshake; the offline device's change survives both.
  const lateStore = new MemoryStorage(Object.fromEntries(storeA.map));
  const late = await open(lateStore, deadUrl);
  late.enroll("kept-offline");
  late.close();
  emit({ type: "await-force" });
  const cmds = commands();
  const cmd = await cmds.next();
  if (cmd.value?.type !== "forced") throw new Error("expected the forced command, got " + JSON.stringify(cmd.value));
  await until("B resynced", () => b.events.some((e) => e.type === "resynced")).catch((e) => {
    throw new Error(e.message + "; B's last events: " + JSON.stringify(b.events.slice(-8)) + " status " + b.status);
  });
  const lateBack = await open(lateStore);
  await until("the late device resynced", () => lateBack.events.some((e) => e.type === "resynced"));
  await until("B sees the late device's offline enrollment", () => b.enrollments().some((x) => x.courseId === "kept-offline"));
  await until("the late device synced", () => lateBack.status === "synced");
  emit({
    type: "resynced",
    epochs: [storeB.getItem("learnsync:epoch"), lateStore.getItem("learnsync:epoch")],
    courses: b.enrollments().map((x) => x.courseId).sort(),
  });
  lateBack.close();
  b.close();
  log("done");
});
