// LearnSync browser client: the JavaScript shell around client-wasm's WasmClient.
//
// The wasm side (sync-core) owns the documents and the automerge-repo protocol and has no I/O;
// this module owns everything with a side effect: the WebSocket, timers, localStorage, the clock
// and randomness. It runs in browsers (served at /app/learnsync.js) and in Node (pass `wasm`,
// `WebSocket`, `storage` and `fetch` explicitly).
//
//   import init, * as wasm from "/app/pkg/client_wasm.js";
//   import { createClient } from "/app/learnsync.js";
//   await init();
//   const client = await createClient({ wasm, url: location.origin });
//   client.on("status", (s) => …); client.on("change", (c) => …);
//   client.setPreference("theme", "dark");
//
// Offline first: every document is saved to storage after every change and loaded from it at
// start, before any network; the socket reconnects with exponential backoff and jitter (the
// delays come from sync-core so every shell backs off alike). Nothing here throws into the page
// for a storage or network problem: those become "error" events.

/** Keys of the legacy learnMode app (sync_core::import::KNOWN_KEYS). */
export const LEGACY_KEYS = [
  "learnModeCourses",
  "learnModeSubjects",
  "adminSubjects",
  "userEnrollments",
  "courseEnrollments",
  "subjectEnrollments",
  "theme",
  "language",
  "moderationQueue",
  "moderationData",
  "errorLog",
];

/** Where the legacy keys are marked migrated (never deleted). */
export const MIGRATED_KEY = "learnsync:migrated";

const PREFIX = "learnsync:";
const K_DEVICE = PREFIX + "device";
const K_IDS = PREFIX + "ids";
const K_EPOCH = PREFIX + "epoch";
const K_IMPORT = PREFIX + "import";
const DOC_PREFIX = PREFIX + "doc:";
/** The stall watchdog: checks every STALL_CHECK_MS, reconnects after STALL_CHECKS unchanged. */
const STALL_CHECK_MS = 4000;
const STALL_CHECKS = 3;

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  let text = "";
  // Chunks: String.fromCharCode with a huge argument list overflows the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function isQuotaError(e) {
  return !!e && (e.name === "QuotaExceededError" || e.name === "NS_ERROR_DOM_QUOTA_REACHED" || e.code === 22);
}

/** A localStorage-shaped store in memory, for Node and for tests. */
export class MemoryStorage {
  constructor(entries) {
    this.map = new Map(Object.entries(entries || {}));
  }
  get length() {
    return this.map.size;
  }
  key(i) {
    return Array.from(this.map.keys())[i] ?? null;
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

/**
 * The client. Create with {@link createClient}; see client-wasm/README.md and learnsync.d.ts.
 */
export class LearnSyncClient {
  constructor(options) {
    const o = options || {};
    if (!o.wasm || !o.wasm.WasmClient) throw new Error("options.wasm must be the client-wasm module");
    this.wasm = o.wasm;
    this.base = String(o.url || (globalThis.location ? globalThis.location.origin : "")).replace(/\/+$/, "");
    if (!this.base) throw new Error("options.url is required outside a browser");
    this.token = o.token || null;
    this.storage = o.storage || globalThis.localStorage;
    this.WebSocketImpl = o.WebSocket || globalThis.WebSocket;
    this.fetchImpl = o.fetch || globalThis.fetch.bind(globalThis);
    this.now = o.now || (() => Date.now());
    this.legacyImport = o.legacyImport !== false;
    this.listeners = new Map();
    this.ws = null;
    this.timer = null;
    this.attempt = 0;
    this.closed = false;
    this.ids = null;
    this.inner = null;
    this.lastStatus = "offline";
    this.onOnline = () => this.reconnectNow();
    // Listeners given up front also hear what start() reports (corrupt stored documents).
    for (const [type, fn] of Object.entries(o.on || {})) this.on(type, fn);
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  /**
   * Subscribes to "status" (string), "change" ({doc, kind, local}), "error" ({kind, message,
   * doc?}), "import" ({phase, …}), "resynced" ({epoch}), "serverStatus" ({ok, message}).
   * Returns a function that unsubscribes.
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, value) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(value);
      } catch (e) {
        // A listener's bug must not stop the client.
        console.error("learnsync listener failed", e);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Storage (every access guarded: a full or broken storage never throws into the page)

  read(key) {
    try {
      return this.storage ? this.storage.getItem(key) : null;
    } catch (e) {
      return null;
    }
  }

  readJson(key) {
    const text = this.read(key);
    if (text == null) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  write(key, value, doc) {
    if (!this.storage) return false;
    try {
      this.storage.setItem(key, value);
      return true;
    } catch (e) {
      this.emit("error", {
        kind: isQuotaError(e) ? "quota" : "storage",
        message: `could not save ${doc ? "document " + doc : key}: ${e && e.message}`,
        doc,
      });
      return false;
    }
  }

  remove(key) {
    try {
      this.storage?.removeItem(key);
    } catch (e) {
      /* nothing to recover */
    }
  }

  storageKeys() {
    const keys = [];
    try {
      for (let i = 0; i < this.storage.length; i++) keys.push(this.storage.key(i));
    } catch (e) {
      /* unreadable storage: nothing stored */
    }
    return keys.filter((k) => k != null);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  /** Loads the saved documents (no network needed), then connects in the background. */
  async start() {
    let device = this.readJson(K_DEVICE);
    if (!device || typeof device.actor !== "string" || typeof device.peerId !== "string") {
      const r = new Uint8Array(32);
      crypto.getRandomValues(r);
      device = { peerId: "ls-" + hex(r.subarray(0, 8)), storageId: hex(r.subarray(8, 16)), actor: hex(r.subarray(16, 32)) };
      this.write(K_DEVICE, JSON.stringify(device));
    }
    this.device = device;
    this.inner = this.newInner();
    const ids = this.readJson(K_IDS);
    if (ids && ids.preferences && ids.learning) this.useIds(ids);
    if (globalThis.addEventListener) globalThis.addEventListener("online", this.onOnline);
    this.emit("status", this.status);
    this.connectLoop();
    return this;
  }

  newInner() {
    const inner = new this.wasm.WasmClient(this.device.peerId, this.device.storageId, this.device.actor);
    const epoch = Number(this.read(K_EPOCH));
    if (Number.isFinite(epoch) && epoch > 0) inner.setEpoch(epoch);
    return inner;
  }

  /** Restores every saved document, then opens the user's documents. */
  useIds(ids) {
    this.ids = { preferences: ids.preferences, learning: ids.learning };
    for (const key of this.storageKeys()) {
      if (!key.startsWith(DOC_PREFIX)) continue;
      const doc = key.slice(DOC_PREFIX.length);
      try {
        this.inner.restore(doc, fromBase64(this.read(key) || ""));
      } catch (e) {
        // Corrupt bytes: drop them; the server sends the document again when we connect.
        this.remove(key);
        this.emit("error", { kind: "corrupt", doc, message: `stored document ${doc} was unreadable and is fetched again: ${e && e.message}` });
      }
    }
    try {
      this.inner.setDocuments(this.ids.preferences, this.ids.learning);
    } catch (e) {
      this.ids = null;
      this.remove(K_IDS);
      this.emit("error", { kind: "corrupt", message: "stored document ids were unreadable: " + (e && e.message) });
    }
    this.drain();
  }

  authHeaders() {
    const h = {};
    if (this.token) h.Authorization = "Bearer " + this.token;
    const m = globalThis.document?.cookie?.match(/(?:^|;\s*)csrf_token=([^;]+)/);
    if (m) h["X-CSRF-Token"] = decodeURIComponent(m[1]);
    return h;
  }

  async request(method, path, body) {
    const headers = this.authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await this.fetchImpl(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let json = null;
    try {
      json = await res.json();
    } catch (e) {
      json = null;
    }
    if (!res.ok) {
      const err = new Error((json && json.error && json.error.message) || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return json;
  }

  /** Learns the document ids once; another user's ids replace this device's documents. */
  async fetchIds() {
    const ids = await this.request("GET", "/api/sync/documents");
    if (!ids || typeof ids.preferences !== "string" || typeof ids.learning !== "string") {
      throw new Error("unexpected /api/sync/documents answer");
    }
    if (this.ids && this.ids.learning === ids.learning) return;
    if (this.ids) {
      // Another account on this browser: its documents start from the server, not ours.
      for (const key of this.storageKeys()) if (key.startsWith(DOC_PREFIX)) this.remove(key);
      this.inner = this.newInner();
    }
    this.write(K_IDS, JSON.stringify({ preferences: ids.preferences, learning: ids.learning }));
    this.useIds(ids);
    this.emit("change", { doc: ids.learning, kind: "learning", local: false });
  }

  // ---------------------------------------------------------------------------------------------
  // Connection

  wsUrl() {
    const url = this.base.replace(/^http/, "ws") + "/sync";
    return this.token ? url + "?token=" + encodeURIComponent(this.token) : url;
  }

  async connectLoop() {
    if (this.closed || this.ws || this.timer) return;
    // The browser knows it has no network: wait for its "online" event instead of flickering
    // between offline and connecting (the backoff timer still retries, in case it is wrong).
    if (globalThis.navigator && globalThis.navigator.onLine === false) return this.scheduleReconnect();
    try {
      if (!this.ids) await this.fetchIds();
      else if (this.ids && !this.idsChecked) {
        // Stored ids: check they still belong to the signed-in user (cheap, and only online).
        await this.fetchIds();
      }
      this.idsChecked = true;
    } catch (e) {
      if (e && e.status === 401) this.emit("error", { kind: "auth", message: "not signed in" });
      if (!this.ids) return this.scheduleReconnect();
    }
    if (this.closed) return;
    this.maybeImportLegacy();
    this.openSocket();
  }

  openSocket() {
    if (this.closed || this.ws || !this.ids) return;
    let ws;
    try {
      this.inner.handleConnecting();
      this.drain();
      ws = new this.WebSocketImpl(this.wsUrl());
    } catch (e) {
      this.inner.handleDisconnected();
      this.drain();
      return this.scheduleReconnect();
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.inner.handleConnected();
      this.drain();
      this.startWatchdog(ws);
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      const data = m.data;
      if (typeof data === "string") return;
      try {
        this.inner.handleFrame(new Uint8Array(data));
      } catch (e) {
        // Undecodable frames are ignored, as automerge-repo does; said for debugging.
        this.emit("error", { kind: "protocol", message: "ignored an undecodable frame: " + (e && e.message) });
      }
      this.drain();
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.inner.handleDisconnected();
      this.drain();
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  /**
   * A sync that stops moving while connected (the same documents unacknowledged, with the same
   * heads, for STALL_CHECKS checks in a row) is restarted with a new connection: a fresh
   * handshake resends everything. Seen when the server's own edit of a new document raced this
   * device's first sync of it (the hub never answered; client-wasm/README.md).
   */
  startWatchdog(ws) {
    let last = "";
    let same = 0;
    const timer = setInterval(() => {
      if (this.ws !== ws || this.closed) return clearInterval(timer);
      if (this.lastStatus !== "syncing") {
        last = "";
        same = 0;
        return;
      }
      const now = JSON.stringify(this.unsynced());
      same = now === last ? same + 1 : 0;
      last = now;
      if (same >= STALL_CHECKS) {
        clearInterval(timer);
        this.emit("error", { kind: "stalled", message: "sync made no progress; reconnecting" });
        try {
          ws.close();
        } catch (e) {
          /* onclose reconnects */
        }
      }
    }, STALL_CHECK_MS);
    // Node: a pending watchdog must not keep the process alive.
    if (timer && typeof timer.unref === "function") timer.unref();
  }

  scheduleReconnect() {
    if (this.closed || this.timer) return;
    const r = new Uint32Array(1);
    crypto.getRandomValues(r);
    const delay = this.wasm.reconnectDelay(this.attempt, r[0]);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connectLoop();
    }, delay);
  }

  /** Skips the backoff (the browser says it is online again). */
  reconnectNow() {
    if (this.closed || this.ws) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.connectLoop();
  }

  // ---------------------------------------------------------------------------------------------
  // Outputs

  drain() {
    const dirty = new Set();
    for (;;) {
      const out = this.inner.pollOutput();
      if (!out) break;
      if (out.type === "send") {
        try {
          if (this.ws && this.ws.readyState === 1) this.ws.send(out.bytes);
        } catch (e) {
          /* the socket is closing; the sync resumes on reconnect */
        }
      } else if (out.type === "persist") {
        dirty.add(out.doc);
      } else if (out.type === "event") {
        let event;
        try {
          event = JSON.parse(out.event);
        } catch (e) {
          continue;
        }
        this.handleEvent(event);
      }
    }
    for (const doc of dirty) this.persist(doc);
    if (this.lastStatus === "synced") this.confirmImport();
  }

  handleEvent(event) {
    switch (event.type) {
      case "status":
        this.lastStatus = event.status;
        if (event.status === "syncing" || event.status === "synced") this.attempt = 0;
        // The first-run POST waits for the first "synced", and one that failed for want of a
        // server is retried once it is back.
        if (event.status === "synced" && this.importRetry) {
          this.importRetry = false;
          this.maybeImportLegacy();
        }
        this.emit("status", event.status);
        break;
      case "change":
        this.emit("change", { doc: event.doc, kind: event.kind, local: event.local });
        break;
      case "resynced":
        this.write(K_EPOCH, String(event.epoch));
        this.emit("resynced", { epoch: event.epoch });
        break;
      case "serverError":
        this.emit("error", { kind: "server", message: event.message });
        break;
      case "serverStatus":
        this.emit("serverStatus", { ok: event.ok, message: event.message });
        break;
      case "unavailable":
        this.emit("error", { kind: "unavailable", doc: event.doc, message: "the server refused document " + event.doc });
        break;
      default:
        break;
    }
  }

  persist(doc) {
    let bytes;
    try {
      bytes = this.inner.save(doc);
    } catch (e) {
      return;
    }
    if (bytes) this.write(DOC_PREFIX + doc, toBase64(bytes), doc);
  }

  // ---------------------------------------------------------------------------------------------
  // Legacy first-run import

  legacyDump() {
    const keys = this.storageKeys();
    if (!keys.some((k) => LEGACY_KEYS.includes(k))) return null;
    const dump = {};
    for (const k of keys) if (!k.startsWith(PREFIX)) dump[k] = this.read(k);
    return dump;
  }

  /**
   * Imports the legacy learnMode keys once: into the documents at once (works offline once the
   * ids are known), then POST /api/me/legacy-import when online. The legacy keys are left as
   * they are; they are marked migrated only when the server confirmed (see confirmImport).
   */
  async maybeImportLegacy() {
    if (!this.legacyImport || !this.ids || this.read(MIGRATED_KEY) != null || this.importing) return;
    const known = this.readJson(K_IMPORT);
    if (known && (known.posted || known.refused)) return;
    const dump = this.legacyDump();
    if (!dump) return;
    this.importing = true;
    try {
      let state = this.readJson(K_IMPORT) || {};
      if (!state.appliedAt) {
        let rows = [];
        try {
          rows = JSON.parse(this.inner.importLegacy(JSON.stringify(dump), this.now()));
        } catch (e) {
          this.emit("error", { kind: "import", message: String(e && e.message) });
          return;
        }
        this.drain();
        state = { appliedAt: new Date(this.now()).toISOString(), posted: false };
        this.write(K_IMPORT, JSON.stringify(state));
        this.emit("import", { phase: "applied", rows });
      }
      if (!state.posted) {
        // POST only once this device's imported documents are on the server: the server's
        // import then finds them there (a no-op) instead of creating the same new documents
        // while this device's first sync of them is in flight (that race left course documents
        // unanswered by the hub; see client-wasm/README.md).
        if (this.lastStatus !== "synced") {
          this.importRetry = true;
          return;
        }
        let run;
        try {
          run = await this.request("POST", "/api/me/legacy-import", { dump });
        } catch (e) {
          // 4xx: the server will never take this dump; keep the fallback and say so.
          if (!e || !e.status || e.status >= 500 || e.status === 429) this.importRetry = true;
          if (e && e.status >= 400 && e.status < 500 && e.status !== 401 && e.status !== 429) {
            state.refused = true;
            this.write(K_IMPORT, JSON.stringify(state));
            this.emit("error", { kind: "import", message: "the server refused the legacy import: " + e.message });
          }
          return;
        }
        state.posted = true;
        state.runId = run && run.id;
        this.write(K_IMPORT, JSON.stringify(state));
        this.emit("import", { phase: "posted", run });
        this.confirmImport();
      }
    } finally {
      this.importing = false;
    }
  }

  /** Marks the legacy keys migrated once the import was posted and the documents are synced. */
  confirmImport() {
    if (this.lastStatus !== "synced" || this.read(MIGRATED_KEY) != null) return;
    const state = this.readJson(K_IMPORT);
    if (!state || !state.posted) return;
    const at = new Date(this.now()).toISOString();
    this.write(MIGRATED_KEY, JSON.stringify({ at, runId: state.runId ?? null }));
    this.emit("import", { phase: "migrated", at });
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  /** "offline" | "connecting" | "syncing" | "synced". */
  get status() {
    return this.inner ? this.inner.status() : "offline";
  }

  /** [{ doc, heads, serverHeads }]: the documents the server is not known to hold entirely. */
  unsynced() {
    if (!this.inner) return [];
    try {
      return JSON.parse(this.inner.unsynced());
    } catch (e) {
      return [];
    }
  }

  /** Whether the user's documents are known (logged in once). */
  get ready() {
    return !!this.ids;
  }

  /** Every preference ({} before the first login). */
  preferences() {
    if (!this.ids) return {};
    try {
      return JSON.parse(this.inner.preferences());
    } catch (e) {
      return {};
    }
  }

  /** One preference, or undefined. */
  preference(key) {
    return this.preferences()[key];
  }

  /** [{ courseId, status: "active"|"unenrolled", enrolledAt, progress: { attempt, completed, progress, timeSpentSecs, lastActivity } | null }] */
  enrollments() {
    if (!this.ids) return [];
    try {
      return JSON.parse(this.inner.enrollments());
    } catch (e) {
      return [];
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Edits: each is persisted and sent at once; they throw (an Error) only on a caller's mistake
  // (not logged in once, a course not enrolled, a bad key).

  edit(f) {
    if (!this.ids) throw new Error("not signed in on this device yet: connect once while online");
    const result = f(this.inner, this.now());
    this.drain();
    return result;
  }

  setPreference(key, value) {
    return this.edit((c, now) => c.setPreference(key, JSON.stringify(value === undefined ? null : value), now));
  }
  setTheme(theme) {
    return this.setPreference("theme", theme);
  }
  setLanguage(language) {
    return this.setPreference("language", language);
  }
  enroll(courseId) {
    return this.edit((c, now) => c.enroll(String(courseId), now));
  }
  unenroll(courseId) {
    return this.edit((c, now) => c.unenroll(String(courseId), now));
  }
  completeLesson(courseId, lessonId) {
    return this.edit((c, now) => c.completeLesson(String(courseId), String(lessonId), now));
  }
  setProgress(courseId, percent) {
    return this.edit((c, now) => c.setProgress(String(courseId), Number(percent), now));
  }
  addTime(courseId, seconds) {
    return this.edit((c, now) => c.addTime(String(courseId), Number(seconds), now));
  }
  restart(courseId) {
    return this.edit((c, now) => c.restart(String(courseId), now));
  }

  // ---------------------------------------------------------------------------------------------
  // Flush and close

  /**
   * Saves every document now and, when connected, waits until the server holds everything
   * (status "synced") or `timeoutMs` passes. Resolves to whether it is synced.
   */
  async flush(timeoutMs = 10000) {
    if (!this.inner) return false;
    for (const doc of this.inner.documents()) this.persist(doc);
    if (this.status === "synced") return true;
    if (!this.ws) return false;
    return new Promise((resolve) => {
      const off = this.on("status", (s) => {
        if (s === "synced") done(true);
      });
      const t = setTimeout(() => done(this.status === "synced"), timeoutMs);
      function done(v) {
        off();
        clearTimeout(t);
        resolve(v);
      }
    });
  }

  /** Saves, closes the socket and stops reconnecting. */
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (globalThis.removeEventListener) globalThis.removeEventListener("online", this.onOnline);
    if (this.inner) for (const doc of this.inner.documents()) this.persist(doc);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close();
      } catch (e) {
        /* already closed */
      }
      this.inner.handleDisconnected();
      this.drain();
    }
  }
}

/** Creates and starts a client: documents load from storage at once, the network follows. */
export async function createClient(options) {
  const client = new LearnSyncClient(options);
  await client.start();
  return client;
}
