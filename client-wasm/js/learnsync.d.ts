// TypeScript declarations for client-wasm/js/learnsync.js (served at /app/learnsync.js).

/** Where the device stands with the server. */
export type SyncStatus = "offline" | "connecting" | "syncing" | "synced";

/** The client-wasm module: `import * as wasm from "/app/pkg/client_wasm.js"` after `init()`,
 * or `require("client-wasm/pkg-node/client_wasm.js")` in Node. */
export interface WasmModule {
  WasmClient: new (peerId: string, storageId: string | undefined, actorHex: string) => unknown;
  reconnectDelay(attempt: number, random: number): number;
}

/** The subset of `localStorage` the client uses. */
export interface StorageLike {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** The client-wasm module, initialised. */
  wasm: WasmModule;
  /** Server origin, e.g. "https://learn.example.org". Default: `location.origin`. */
  url?: string;
  /** An API token (Authorization: Bearer, `?token=` on the WebSocket). Default: the session
   * cookie of a same-origin page. */
  token?: string;
  /** Default: `globalThis.localStorage`. */
  storage?: StorageLike;
  /** Default: `globalThis.WebSocket` (pass the `ws` package in Node 20). */
  WebSocket?: unknown;
  /** Default: `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Clock, epoch ms. Default: `Date.now`. */
  now?: () => number;
  /** Listeners registered before start(), so they also hear what loading storage reports. */
  on?: { [K in keyof EventMap]?: (value: EventMap[K]) => void };
  /** Import the legacy learnMode keys on first run (default true). */
  legacyImport?: boolean;
}

/** Progress of the current attempt of one course. */
export interface CourseProgress {
  attempt: number;
  /** Lesson id → completion time (epoch ms). */
  completed: Record<string, number>;
  /** Percent, 0–100; never goes down within an attempt. */
  progress: number;
  timeSpentSecs: number;
  lastActivity: number | null;
}

export interface Enrollment {
  courseId: string;
  status: "active" | "unenrolled";
  enrolledAt: number | null;
  /** `null` until the course document is known on this device. */
  progress: CourseProgress | null;
}

export interface ChangeEvent {
  doc: string;
  kind: "preferences" | "learning" | "course" | null;
  /** `true` for this device's own edits. */
  local: boolean;
}

export interface ErrorEvent {
  /** quota: storage full (documents stay in memory and on the server); corrupt: stored bytes
   * were unreadable and were dropped (the server sends them again); storage, auth, server,
   * unavailable, import, protocol (an undecodable frame, ignored), stalled (a sync that stopped
   * moving; the client reconnects). */
  kind: "quota" | "corrupt" | "storage" | "auth" | "server" | "unavailable" | "import" | "protocol" | "stalled";
  message: string;
  doc?: string;
}

export interface KeyReport {
  key: string;
  outcome: "imported" | "merged" | "unchanged" | "skipped" | "failed";
  count: number;
  notes: string[];
}

export type ImportEvent =
  | { phase: "applied"; rows: KeyReport[] }
  | { phase: "posted"; run: unknown }
  | { phase: "migrated"; at: string };

export interface EventMap {
  status: SyncStatus;
  change: ChangeEvent;
  error: ErrorEvent;
  import: ImportEvent;
  resynced: { epoch: number };
  serverStatus: { ok: boolean; message: string | null };
}

export declare const LEGACY_KEYS: readonly string[];
/** `localStorage` key written (JSON `{ at, runId }`) once the legacy import is confirmed. */
export declare const MIGRATED_KEY: "learnsync:migrated";

export declare class MemoryStorage implements StorageLike {
  constructor(entries?: Record<string, string>);
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export declare class LearnSyncClient {
  constructor(options: ClientOptions);
  start(): Promise<this>;
  on<K extends keyof EventMap>(type: K, listener: (value: EventMap[K]) => void): () => void;
  readonly status: SyncStatus;
  /** Whether the user's document ids are known (connected once). */
  readonly ready: boolean;
  preferences(): Record<string, unknown>;
  preference(key: string): unknown;
  enrollments(): Enrollment[];
  /** The documents the server is not known to hold entirely yet (what "syncing" waits for). */
  unsynced(): { doc: string; heads: string[]; serverHeads: string[] }[];
  /** Edits throw an Error only for a caller's mistake (never connected, not enrolled, bad key). */
  setPreference(key: string, value: unknown): boolean;
  setTheme(theme: string): boolean;
  setLanguage(language: string): boolean;
  enroll(courseId: string): boolean;
  unenroll(courseId: string): boolean;
  completeLesson(courseId: string, lessonId: string): boolean;
  /** Returns the progress the course has afterwards (it never goes down). */
  setProgress(courseId: string, percent: number): number;
  addTime(courseId: string, seconds: number): void;
  /** Starts a new attempt; returns its number. */
  restart(courseId: string): number;
  /** Saves everything; when connected waits for "synced" (or the timeout). */
  flush(timeoutMs?: number): Promise<boolean>;
  close(): void;
  /** Skip the backoff and reconnect now. */
  reconnectNow(): void;
}

export declare function createClient(options: ClientOptions): Promise<LearnSyncClient>;
