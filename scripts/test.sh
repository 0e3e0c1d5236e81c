#!/usr/bin/env bash
# The whole LearnSync test suite: what CI (.ci/run) and a newcomer run.
# Idempotent: installs what is missing (Debian packages, wasm tools, npm packages), then runs
# formatting and lint checks, the wasm builds, and every test against real PostgreSQL and SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
scripts/setup-system.sh

step "PostgreSQL reachable at ${TEST_DATABASE_URL%%\?*}"
scripts/ensure-postgres.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "wasm: sync-core and client-wasm for wasm32-unknown-unknown"
scripts/build-wasm.sh

step "JavaScript test dependencies (pinned, from npm)"
scripts/setup-js.sh

step "schemathesis (pinned, from PyPI) for the API fuzzing test"
scripts/setup-schemathesis.sh

step "server binary (process-level tests and the benchmark smoke run start it)"
cargo build -p learnsync --locked

step "tests"
cargo nextest run --workspace --locked --no-fail-fast ${NEXTEST_ARGS:-}

step "all tests passed"
