// Loads client-wasm/pkg-node (wasm-bindgen's nodejs target) and reports what its exports return,
// next to what the official automerge-repo makes of the ids. Run by tests/tests/wasm_smoke.rs.
//
//   node wasm_smoke.mjs <pkg-node dir> <learning document id> <course id>…
import { createRequire } from "node:module";
import path from "node:path";
import { performance } from "node:perf_hooks";

import { documentIdToBinary, isValidDocumentId } from "@automerge/automerge-repo";

import { emit, run } from "./lib/harness.mjs";

function thrown(f) {
  try {
    return { threw: false, value: f() };
  } catch (e) {
    return { threw: true, isError: e instanceof Error, message: e?.message };
  }
}

run(async () => {
  const [pkgDir, learning, ...courses] = process.argv.slice(2);
  if (!pkgDir || !learning) throw new Error("usage: wasm_smoke.mjs <pkg-node dir> <learning id> <course id>…");

  const require = createRequire(import.meta.url);
  const started = performance.now();
  const wasm = require(path.resolve(pkgDir, "client_wasm.js"));
  const loadMs = performance.now() - started;

  const derived = courses.map((course) => wasm.courseDocumentId(learning, course));
  emit({
    type: "result",
    loadMs,
    derived,
    validLearning: wasm.isValidDocumentId(learning),
    validGarbage: wasm.isValidDocumentId("not-an-id"),
    automergeRepoValid: derived.map((id) => isValidDocumentId(id)),
    automergeRepoBytes: derived.map((id) => Buffer.from(documentIdToBinary(id)).toString("hex")),
    badLearning: thrown(() => wasm.courseDocumentId("not-an-id", "rust-101")),
    emptyCourse: thrown(() => wasm.courseDocumentId(learning, "")),
  });
});
