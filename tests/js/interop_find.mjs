// One official client looks for a document by URL and reports whether it got it.
//   node interop_find.mjs <ws url> <automerge url>
import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

import { emit, run } from "./lib/harness.mjs";

run(async () => {
  const [url, docUrl] = process.argv.slice(2);
  const repo = new Repo({ network: [new BrowserWebSocketClientAdapter(url)] });
  await repo.networkSubsystem.whenReady();
  try {
    const handle = await repo.find(docUrl);
    emit({ type: "result", found: true, unavailable: false, doc: handle.doc() });
  } catch (e) {
    emit({ type: "result", found: false, unavailable: /unavailable/i.test(e.message), message: e.message });
  }
  repo.shutdown();
  process.exit(0);
});
