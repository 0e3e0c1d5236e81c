// Two official automerge-repo 2.5.6 clients (Node, WebSocket adapter) syncing through a server:
// A creates a document and B finds it at once (the create-then-find race), then both edit and
// see each other's changes. Run by tests/tests/interop_js.rs.
//
//   node interop.mjs <ws url of client A> <ws url of client B>
import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

import { emit, log, run } from "./lib/harness.mjs";

function repo(url) {
  return new Repo({ network: [new BrowserWebSocketClientAdapter(url)] });
}

async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

run(async () => {
  const [urlA, urlB] = process.argv.slice(2);
  const a = repo(urlA);
  const b = repo(urlB);
  await Promise.all([a.networkSubsystem.whenReady(), b.networkSubsystem.whenReady()]);

  // Create on A and find on B right away.
  const handleA = a.create({ title: "shared", items: [] });
  const handleB = await b.find(handleA.url);
  await handleB.whenReady();
  emit({ type: "found", url: handleA.url, title: handleB.doc().title });

  // Edits both ways.
  handleA.change((d) => { d.items.push("from A"); });
  await until("A's edit on B", () => handleB.doc().items.includes("from A"));
  handleB.change((d) => { d.items.push("from B"); d.title = "edited by B"; });
  await until("B's edit on A", () => handleA.doc().items.includes("from B"));
  emit({ type: "converged", a: handleA.doc(), b: handleB.doc() });

  // A document nobody has: find rejects (doc-unavailable), as against the JS server.
  const missing = "automerge:2mtAaaMKcNDRCpUHKJUBiwqqoHF4";
  let unavailable = false;
  try {
    await b.find(missing);
  } catch (e) {
    log("find of an unknown document:", e.message);
    unavailable = /unavailable/i.test(e.message);
  }
  emit({ type: "unavailable", unavailable });
  a.shutdown();
  b.shutdown();
  process.exit(0);
});
