#!/usr/bin/env bash
# Installs the pinned JavaScript packages of tests/js (the official automerge-repo client,
# WebSocket adapter and Node storage the tests interoperate with; binaryen's wasm-opt for
# scripts/build-wasm.sh) with `npm ci`, but only when node_modules is missing or package.json,
# package-lock.json or the Node major version changed since the last install (a stamp file in
# node_modules records what was installed). Warm runs take milliseconds.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"

say() { printf '[setup-js] %s\n' "$*"; }
die() { printf '[setup-js] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (Node.js 20 or newer is needed)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old; 20 or newer is needed"
[ -f package-lock.json ] || die "tests/js/package-lock.json is missing (it is committed)"

stamp=node_modules/.learnsync-install-stamp
want="$(sha256sum package.json package-lock.json | cut -d' ' -f1 | tr '\n' ' ')node $node_major"
if [ -d node_modules ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

# One install at a time in this checkout (npm ci deletes node_modules first).
exec 9>"${TMPDIR:-/tmp}/learnsync-setup-js-$(pwd | sha256sum | cut -c1-12).lock"
flock 9
if [ -d node_modules ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

say "npm ci in tests/js (Node $(node --version))"
start=$SECONDS
# --ignore-scripts: the only install script is cbor-extract's, which would compile its native
# decoder when no prebuilt one fits; the prebuilt ones come as optional packages, and cbor-x falls
# back to plain JavaScript without them. npm versions also differ on which scripts they allow.
# (package.json overrides cbor-extract to 2.2.2: this machine's registry serves cbor-extract
# 2.2.3 but none of its per-platform packages, which makes `npm ci` refuse the lock.)
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
say "done in $((SECONDS - start))s"
