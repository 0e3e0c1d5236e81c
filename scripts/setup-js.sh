#!/usr/bin/env bash
# Installs pinned JavaScript packages with `npm ci` in each directory given (relative to the
# checkout; default: tests/js and bench/reference). tests/js holds the official automerge-repo
# client, WebSocket adapter and Node storage the tests interoperate with, and binaryen's wasm-opt
# for scripts/build-wasm.sh; bench/reference holds the benchmark's reference server.
# Installs only when node_modules is missing or package.json, package-lock.json or the Node major
# version changed since the last install (a stamp file in node_modules records what was
# installed), one install at a time per directory (a lock file), so concurrent callers (the
# benchmark's smoke tests) never see a half-installed tree. Warm runs take milliseconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$#" -eq 0 ]; then
  set -- tests/js bench/reference
fi
if [ "$#" -gt 1 ]; then
  for dir in "$@"; do "$0" "$dir"; done
  exit 0
fi
cd "$root/$1"

say() { printf '[setup-js] %s\n' "$*"; }
die() { printf '[setup-js] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (Node.js 20 or newer is needed)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old; 20 or newer is needed"
[ -f package-lock.json ] || die "$1/package-lock.json is missing (it is committed)"

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

say "npm ci in $1 (Node $(node --version))"
start=$SECONDS
# --ignore-scripts: the only install script is cbor-extract's, which would compile its native
# decoder when no prebuilt one fits; the prebuilt ones come as optional packages, and cbor-x falls
# back to plain JavaScript without them. npm versions also differ on which scripts they allow.
# (package.json overrides cbor-extract to 2.2.2: this machine's registry serves cbor-extract
# 2.2.3 but none of its per-platform packages, which makes `npm ci` refuse the lock.)
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
say "done in $((SECONDS - start))s"
