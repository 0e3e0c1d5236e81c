// The script side of tests/src/js.rs: one JSON value per stdout line is a message to the Rust
// test; logs go to stderr. Commands from the test arrive as JSON lines on stdin.
import { createInterface } from "node:readline";

/** Sends one message to the test. */
export function emit(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

/** Logs to stderr (the test shows it when it fails). */
export function log(...parts) {
  console.error(...parts);
}

/** Reports an error to the test (which fails at once) and exits with status 1. */
export function fail(error) {
  const message = error instanceof Error ? error.message : String(error);
  const stack = error instanceof Error ? error.stack : undefined;
  emit({ type: "error", message, stack });
  process.exit(1);
}

/** Commands from the test, one parsed JSON value per stdin line; ends when the test closes stdin. */
export async function* commands() {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() !== "") yield JSON.parse(line);
  }
}

/** Runs `main`, reporting any exception or unhandled rejection through `fail`. */
export function run(main) {
  process.on("unhandledRejection", fail);
  main().catch(fail);
}
