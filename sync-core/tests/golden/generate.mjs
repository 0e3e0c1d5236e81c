// Writes messages.json: automerge-repo frames as the JavaScript implementation puts them on the
// wire, for sync-core's wire tests (which read the committed file and never need node).
//
//   cd sync-core/tests/golden && npm ci --ignore-scripts && node generate.mjs
//
// Most frames are captured: real `Repo`s from @automerge/automerge-repo 2.5.6 talk through the
// real WebSocketServerAdapter / WebSocketClientAdapter (2.5.6) over loopback WebSockets, and
// every binary frame in either direction is recorded at the server's sockets. Frames no real
// peer produces on demand (an ephemeral count past 2^32, the legacy `leave`, an unknown type,
// LearnSync's own types) are built as object literals in the key order the JavaScript source
// uses and encoded with the exact encoder automerge-repo uses (`helpers/cbor.ts`).
//
// The script also checks, live, that a real JavaScript client ignores LearnSync's own message
// types (and unknown ones) without dropping the connection, and fails if it does not.

import { once } from "node:events";
import { writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

import { Encoder, decode as cborDecode } from "cbor-x";
import { WebSocketServer, WebSocket } from "ws";
import { next as A } from "@automerge/automerge";
import {
  Repo,
  parseAutomergeUrl,
  stringifyAutomergeUrl,
} from "@automerge/automerge-repo";
import { DummyStorageAdapter } from "@automerge/automerge-repo/helpers/DummyStorageAdapter.js";
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket";

const here = dirname(fileURLToPath(import.meta.url));

// Peer ids and ephemeral session ids come from Math.random(); seed it so that regenerating the
// file changes only what must change (the remote-heads timestamp is Date.now()).
let seed = 0x9e3779b9;
Math.random = () => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 2 ** 32;
};

// The encoder automerge-repo 2.5.6 uses for every message (REPO/helpers/cbor.ts).
const encoder = new Encoder({ tagUint8Array: false, useRecords: false });
const cborEncode = value => Buffer.from(encoder.encode(value));

const hex = bytes => Buffer.from(bytes).toString("hex");
const fromHex = text => new Uint8Array(Buffer.from(text, "hex"));
const docId = payloadHex =>
  parseAutomergeUrl(stringifyAutomergeUrl(fromHex(payloadHex))).documentId;

// The test vector of the protocol notes (§3) and two more ids.
const DOC_SHARED = docId("00112233445566778899aabbccddeeff");
const DOC_MISSING = docId("ffeeddccbbaa99887766554433221100");
const DOC_GOSSIP = docId("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
const SERVER_STORAGE_ID = "5e1f0c4e-7d2a-4b8e-9c3f-1a2b3c4d5e6f";
const CLIENT_B_STORAGE_ID = "b0b0b0b0-1111-4222-8333-444455556666";
const RELAY_STORAGE_ID = "7e1a7e1a-0000-4000-8000-000000000001";
const GOSSIP_1_STORAGE_ID = "90551901-aaaa-4bbb-8ccc-dddddddddddd";

const TIMEOUT_MS = 10_000;

async function until(what, predicate) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const found = predicate();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, 5));
  }
}

async function seededStorage(storageId) {
  const storage = new DummyStorageAdapter();
  await storage.save(["storage-adapter-id"], new TextEncoder().encode(storageId));
  return storage;
}

// A document with a fixed actor and timestamp, so its sync messages are the same on every run.
function goldenDocBytes(actorHex, title) {
  let doc = A.init({ actor: actorHex });
  doc = A.change(doc, { time: 1767225600, message: "genesis" }, d => {
    d.title = title;
    d.lessons = ["intro", "cbor"];
  });
  return A.save(doc);
}

/** Every binary frame through a WebSocketServer, in order, with its direction. */
function capture(wss, frames) {
  wss.on("connection", socket => {
    socket.on("message", (data, isBinary) => {
      if (!isBinary) throw new Error("a JavaScript peer sent a text frame");
      frames.push({ dir: "client->server", bytes: Buffer.from(data) });
    });
    const send = socket.send.bind(socket);
    socket.send = (data, ...rest) => {
      frames.push({ dir: "server->client", bytes: Buffer.from(data) });
      return send(data, ...rest);
    };
  });
}

// Closes a Repo's sockets. (Repo.shutdown() would also flush documents, and throws for a handle
// that ended up unavailable.)
function disconnect(repo) {
  repo.networkSubsystem.disconnect();
}

async function listen() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  return { wss, url: `ws://127.0.0.1:${wss.address().port}` };
}

function finder(frames) {
  return (dir, fields) =>
    frames.find(f => {
      if (f.dir !== dir) return false;
      const m = cborDecode(f.bytes);
      return Object.entries(fields).every(([k, v]) =>
        typeof v === "function" ? v(m[k]) : m[k] === v,
      );
    });
}

const fixtures = [];
function fixture(name, origin, source, bytes, exact = true) {
  if (!bytes) throw new Error(`no frame for ${name}`);
  fixtures.push({ name, origin, source, exact, hex: hex(bytes), decoded: toJson(cborDecode(bytes)) });
}

// cbor-x's view of a frame as JSON: byte strings as {"$bytes": hex}, undefined and null as null.
function toJson(value) {
  if (value === undefined || value === null) return null;
  if (value instanceof Uint8Array) return { $bytes: hex(value) };
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// 1. The official server setup (storage, sharePolicy false) with two real clients.

async function officialServer() {
  const frames = [];
  const { wss, url } = await listen();
  capture(wss, frames);
  const find = finder(frames);
  const server = new Repo({
    network: [new WebSocketServerAdapter(wss)],
    storage: await seededStorage(SERVER_STORAGE_ID),
    peerId: "storage-server-golden",
    sharePolicy: async () => false,
  });
  // A browser tab with no storage: its join carries storageId: undefined.
  const clientA = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "client-a" });
  // A client with storage.
  const clientB = new Repo({
    network: [new WebSocketClientAdapter(url)],
    storage: await seededStorage(CLIENT_B_STORAGE_ID),
    peerId: "client-b",
  });
  await until("both handshakes", () =>
    find("server->client", { type: "peer", targetId: "client-a" }) &&
    find("server->client", { type: "peer", targetId: "client-b" }));

  const handleA = clientA.import(goldenDocBytes("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "golden"), {
    docId: DOC_SHARED,
  });
  handleA.doneLoading();
  await until("the server's answer to client-a's first sync", () =>
    find("server->client", { type: "sync", targetId: "client-a", documentId: DOC_SHARED }));
  const handleB = await clientB.find(`automerge:${DOC_SHARED}`);
  if (handleB.doc().title !== "golden") throw new Error("client-b did not get the document");

  handleA.broadcast({ cursor: 7, name: "golden" });
  await until("the relayed ephemeral message", () =>
    find("server->client", { type: "ephemeral", targetId: "client-b" }));

  const unavailable = await clientB
    .find(`automerge:${DOC_MISSING}`)
    .then(() => false, () => true);
  if (!unavailable) throw new Error("find() of a missing document did not reject");
  await until("doc-unavailable", () =>
    find("server->client", { type: "doc-unavailable", targetId: "client-b" }));

  // A client that speaks only a future protocol version: the server answers `error`.
  const raw = new WebSocket(url);
  raw.binaryType = "nodebuffer";
  await once(raw, "open");
  raw.send(
    cborEncode({
      type: "join",
      senderId: "client-future",
      peerMetadata: { isEphemeral: true },
      supportedProtocolVersions: ["99"],
    }),
  );
  await until("the error frame", () =>
    find("server->client", { type: "error", targetId: "client-future" }));
  raw.close();

  fixture("join-storage-less-client", "captured",
    "WebSocketClientAdapter.joinMessage of a Repo without storage (storageId: undefined → f7)",
    find("client->server", { type: "join", senderId: "client-a" })?.bytes);
  fixture("join-with-storage-id", "captured",
    "WebSocketClientAdapter.joinMessage of a Repo with storage",
    find("client->server", { type: "join", senderId: "client-b" })?.bytes);
  fixture("peer-from-server-with-storage", "captured",
    "WebSocketServerAdapter.receiveMessage answering a join",
    find("server->client", { type: "peer", targetId: "client-a" })?.bytes);
  fixture("error-unsupported-protocol-version", "captured",
    "WebSocketServerAdapter.receiveMessage answering a join without version \"1\"",
    find("server->client", { type: "error", targetId: "client-future" })?.bytes);
  fixture("sync-from-client", "captured",
    "DocSynchronizer.#sendSyncMessage of a client holding the document",
    find("client->server", { type: "sync", senderId: "client-a", documentId: DOC_SHARED })?.bytes);
  fixture("sync-from-server", "captured",
    "DocSynchronizer.#sendSyncMessage of the server answering client-a",
    find("server->client", { type: "sync", targetId: "client-a", documentId: DOC_SHARED })?.bytes);
  fixture("sync-from-server-with-changes", "captured",
    "DocSynchronizer.#sendSyncMessage of the server sending the document's changes to client-b",
    find("server->client", {
      type: "sync",
      targetId: "client-b",
      documentId: DOC_SHARED,
      // The document itself, not the 25-byte empty-document reply (which also carries a chunk).
      data: d => d && A.decodeSyncMessage(d).heads.length > 0 && d.length > 100,
    })?.bytes);
  fixture("request-from-client", "captured",
    "DocSynchronizer.#sendSyncMessage of a client that does not have the document",
    find("client->server", { type: "request", senderId: "client-b", documentId: DOC_SHARED })?.bytes);
  fixture("doc-unavailable-from-server", "captured",
    "DocSynchronizer.#checkDocUnavailable of the server",
    find("server->client", { type: "doc-unavailable", targetId: "client-b" })?.bytes);
  fixture("ephemeral-from-client", "captured",
    "DocHandle.broadcast through NetworkSubsystem.prepareMessage (count, sessionId added)",
    find("client->server", { type: "ephemeral", senderId: "client-a" })?.bytes);
  fixture("ephemeral-relayed-by-server", "captured",
    "DocSynchronizer.receiveEphemeralMessage relaying to the document's other peer",
    find("server->client", { type: "ephemeral", targetId: "client-b" })?.bytes);

  for (const repo of [clientA, clientB, server]) disconnect(repo);
  wss.close();
}

// ---------------------------------------------------------------------------------------------
// 2. Remote-heads gossip: a relay that announces to everyone, with gossip enabled everywhere.

async function gossipRelay() {
  const frames = [];
  const { wss, url } = await listen();
  capture(wss, frames);
  const find = finder(frames);
  const relay = new Repo({
    network: [new WebSocketServerAdapter(wss)],
    storage: await seededStorage(RELAY_STORAGE_ID),
    peerId: "relay-golden",
    sharePolicy: async () => true,
    enableRemoteHeadsGossiping: true,
  });
  const gossip1 = new Repo({
    network: [new WebSocketClientAdapter(url)],
    storage: await seededStorage(GOSSIP_1_STORAGE_ID),
    peerId: "gossip-1",
    // Not generous: otherwise gossip-1 echoes gossip-2's subscription back to the relay, which
    // then keeps it alive after gossip-2 leaves.
    sharePolicy: async () => false,
    enableRemoteHeadsGossiping: true,
  });
  const gossip2 = new Repo({
    network: [new WebSocketClientAdapter(url)],
    peerId: "gossip-2",
    enableRemoteHeadsGossiping: true,
  });
  await until("both handshakes", () =>
    find("server->client", { type: "peer", targetId: "gossip-1" }) &&
    find("server->client", { type: "peer", targetId: "gossip-2" }));

  // gossip-2 wants to hear about gossip-1's storage: {add: [id], remove: undefined}.
  gossip2.subscribeToRemotes([GOSSIP_1_STORAGE_ID]);
  await until("the subscription", () =>
    find("client->server", { type: "remote-subscription-change", senderId: "gossip-2" }));

  const h1 = gossip1.import(goldenDocBytes("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "gossip"), {
    docId: DOC_GOSSIP,
  });
  h1.doneLoading();
  const h2 = await gossip2.find(`automerge:${DOC_GOSSIP}`);
  if (h2.doc().title !== "gossip") throw new Error("gossip-2 did not get the document");
  h1.change(d => {
    d.title = "gossip, edited";
  });
  await until("remote-heads-changed", () =>
    find("server->client", { type: "remote-heads-changed", targetId: "gossip-2" }));

  // gossip-2 leaves: the relay tells gossip-1 it no longer needs the subscription,
  // {add: undefined, remove: [id]}.
  disconnect(gossip2);
  await until("the unsubscription", () =>
    find("server->client", {
      type: "remote-subscription-change",
      targetId: "gossip-1",
      add: a => a === undefined,
    }));

  fixture("remote-subscription-change-remove-undefined", "captured",
    "Repo change-remote-subs handler after RemoteHeadsSubscriptions.subscribeToRemotes",
    find("client->server", { type: "remote-subscription-change", senderId: "gossip-2" })?.bytes);
  fixture("remote-subscription-change-add-undefined", "captured",
    "Repo change-remote-subs handler after RemoteHeadsSubscriptions.removePeer",
    find("server->client", {
      type: "remote-subscription-change",
      targetId: "gossip-1",
      add: a => a === undefined,
    })?.bytes);
  fixture("remote-heads-changed", "captured",
    "Repo notify-remote-heads handler (timestamp is Date.now(): float64)",
    find("server->client", { type: "remote-heads-changed", targetId: "gossip-2" })?.bytes);

  for (const repo of [gossip1, relay]) disconnect(repo);
  wss.close();
}

// ---------------------------------------------------------------------------------------------
// 3. Frames no real peer sends on demand, built in the JavaScript source's key order.

const learnsyncResync = {
  type: "learnsync-resync",
  senderId: "learnsync-server",
  targetId: "client-a",
  epoch: 3,
  reason: "forced",
};
const learnsyncResyncBigEpoch = {
  type: "learnsync-resync",
  senderId: "learnsync-server",
  targetId: "client-a",
  epoch: 2 ** 32 + 9,
};
const learnsyncStatus = {
  type: "learnsync-status",
  senderId: "learnsync-server",
  targetId: "client-a",
  state: "degraded",
  message: "database unreachable; changes are kept on the device",
};
const learnsyncStatusOk = {
  type: "learnsync-status",
  senderId: "learnsync-server",
  targetId: "client-a",
  state: "ok",
};
const unknownType = {
  type: "presence-update",
  senderId: "client-z",
  targetId: "storage-server-golden",
  documentId: DOC_SHARED,
  payload: { cursor: [1, 2, 3], nested: { deep: true } },
};

function constructed() {
  // NetworkSubsystem.prepareMessage on a DocSynchronizer ephemeral message: type, targetId,
  // documentId, data, then count, sessionId, senderId.
  fixture("ephemeral-count-above-2-32", "constructed",
    "NetworkSubsystem.prepareMessage key order; count 2^32 + 5 (a number cbor-x writes as float64)",
    cborEncode({
      type: "ephemeral",
      targetId: "storage-server-golden",
      documentId: DOC_SHARED,
      data: new Uint8Array(cborEncode({ hello: "world" })),
      count: 2 ** 32 + 5,
      sessionId: "golden-session",
      senderId: "client-a",
    }));
  // The legacy client's goodbye (removed in automerge-repo commit 2c450d6a).
  fixture("leave-legacy", "constructed", "legacy NetworkAdapter leave: {type, senderId}",
    cborEncode({ type: "leave", senderId: "client-old" }));
  fixture("unknown-type", "constructed",
    "a message type automerge-repo does not know, with fields of its own",
    cborEncode(unknownType), false);
  fixture("learnsync-resync", "constructed", "LearnSync's forced-sync notice",
    cborEncode(learnsyncResync));
  fixture("learnsync-resync-epoch-above-2-32", "constructed",
    "LearnSync's forced-sync notice with an epoch cbor-x writes as float64",
    cborEncode(learnsyncResyncBigEpoch));
  fixture("learnsync-status-degraded", "constructed", "LearnSync's server-status notice",
    cborEncode(learnsyncStatus));
  fixture("learnsync-status-ok", "constructed", "LearnSync's server-status notice, no message",
    cborEncode(learnsyncStatusOk));
}

// ---------------------------------------------------------------------------------------------
// 4. A real client meets LearnSync's own types: it must ignore them and keep the socket open.

async function clientIgnoresLearnSyncTypes() {
  const { wss, url } = await listen();
  const received = [];
  let closed = false;
  wss.on("connection", socket => {
    socket.on("close", () => (closed = true));
    socket.on("message", data => {
      const message = cborDecode(data);
      received.push(message);
      if (message.type === "join") {
        socket.send(
          cborEncode({
            type: "peer",
            senderId: "learnsync-server",
            peerMetadata: { storageId: SERVER_STORAGE_ID, isEphemeral: false },
            selectedProtocolVersion: "1",
            targetId: message.senderId,
          }),
        );
        for (const frame of [learnsyncResync, learnsyncResyncBigEpoch, learnsyncStatus, unknownType]) {
          socket.send(cborEncode({ ...frame, targetId: message.senderId }));
        }
      }
    });
  });
  const client = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "client-c" });
  await until("the handshake", () => received.some(m => m.type === "join"));
  // After the LearnSync frames, the client must still use the same socket for a request.
  client.find(`automerge:${DOC_SHARED}`).catch(() => {});
  await until("a request on the same socket", () => received.some(m => m.type === "request"));
  if (closed) throw new Error("the JavaScript client closed the socket");
  disconnect(client);
  wss.close();
  return "a real WebSocketClientAdapter 2.5.6 Repo received learnsync-resync, learnsync-status " +
    "and an unknown type after `peer`, kept the socket open and then sent `request` on it";
}

// ---------------------------------------------------------------------------------------------

await officialServer();
await gossipRelay();
constructed();
const ignored = await clientIgnoresLearnSyncTypes();

const pkg = name =>
  JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8")).version;
const out = {
  about:
    "automerge-repo frames as the JavaScript implementation writes them; generated by " +
    "sync-core/tests/golden/generate.mjs. `exact`: sync-core's encoder must reproduce the bytes. " +
    "`decoded`: cbor-x's own decoding (bytes as {\"$bytes\": hex}, undefined as null).",
  versions: {
    node: process.version,
    "@automerge/automerge-repo": pkg("@automerge/automerge-repo"),
    "@automerge/automerge-repo-network-websocket": pkg("@automerge/automerge-repo-network-websocket"),
    "@automerge/automerge": pkg("@automerge/automerge"),
    "cbor-x": pkg("cbor-x"),
  },
  encoder: "new Encoder({ tagUint8Array: false, useRecords: false }) (automerge-repo helpers/cbor.ts)",
  verified: [ignored],
  frames: fixtures,
};
writeFileSync(join(here, "messages.json"), JSON.stringify(out, null, 2) + "\n");

// The same frames seed the fuzzer's corpus.
const seeds = join(here, "..", "..", "fuzz", "seeds", "wire_decode");
mkdirSync(seeds, { recursive: true });
for (const f of fixtures) writeFileSync(join(seeds, `${f.name}.cbor`), fromHex(f.hex));

console.log(`wrote ${fixtures.length} frames to messages.json and ${seeds}`);
process.exit(0);
