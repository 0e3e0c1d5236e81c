#!/usr/bin/env bash
# Builds the browser client and proves sync-core stays wasm-clean:
#   1. sync-core for wasm32-unknown-unknown (a project rule: it must always build there);
#   2. client-wasm for wasm32-unknown-unknown with the workspace's `wasm` profile;
#   3. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock, in .tools/;
#   4. client-wasm/pkg (target web, for the browser) and client-wasm/pkg-node (target nodejs);
#   5. wasm-opt (npm package binaryen, pinned in tests/js) shrinks both; sizes are printed.
#
# rustup here has no wasm32 standard library and cannot fetch one, so steps 1-2 use Debian's Rust
# (packages rustc-web cargo-web rust-web-src rust-web-llvm lld-22, installed by
# scripts/setup-system.sh) and build std from source with -Zbuild-std. The wasm build has its own
# target directory (target-wasm) so it never invalidates the native build's cache.
#
# Idempotent: a warm run with nothing changed takes seconds. A fresh machine needs about ten
# minutes, most of it compiling wasm-bindgen-cli once.
#
# Environment:
#   WASM_TARGET_DIR   cargo target directory for the wasm build (default: target-wasm)
#   LEARNSYNC_WASM_OPT=0   skip wasm-opt (bigger bundle; for debugging the bindings)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

triple=wasm32-unknown-unknown
profile=wasm
target_dir="${WASM_TARGET_DIR:-$root/target-wasm}"
tools="$root/.tools"
crate_wasm="$target_dir/$triple/$profile/client_wasm.wasm"
wasm_opt="$root/tests/js/node_modules/.bin/wasm-opt"
use_wasm_opt="${LEARNSYNC_WASM_OPT:-1}"

say() { printf '[build-wasm] %s\n' "$*"; }
die() { printf '[build-wasm] error: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$((SECONDS - $1))s"; }

# --- preflight: Debian's wasm-capable Rust -------------------------------------------------------
missing=()
[ -x /usr/bin/cargo ] || missing+=("/usr/bin/cargo (cargo-web)")
[ -x /usr/bin/rustc ] || missing+=("/usr/bin/rustc (rustc-web)")
[ -d /usr/lib/rustlib/src/rust/library/std ] || missing+=("/usr/lib/rustlib/src/rust (rust-web-src)")
command -v rust-lld >/dev/null 2>&1 && rust-lld -flavor wasm --version >/dev/null 2>&1 \
  || missing+=("a working rust-lld (rust-web-llvm + lld-22)")
if [ ${#missing[@]} -gt 0 ]; then
  die "missing ${missing[*]}. Run scripts/setup-system.sh (installs Debian's wasm-capable Rust)."
fi

mkdir -p "$tools"
# One build at a time in this checkout: several engineers share it, and the steps below replace
# whole directories.
exec 9>"$tools/.build-wasm.lock"
if ! flock -n 9; then
  say "another build-wasm.sh is running in this checkout; waiting for it"
  flock 9
fi

# Debian's cargo with Debian's rustc: rustup's proxies come first in PATH and would pick rustup's
# rustc, which has no wasm32 std. Variables meant for the native toolchain are dropped.
debian_cargo() {
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER \
    -u CARGO_BUILD_TARGET \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
    /usr/bin/cargo "$@"
}
wasm_build() {
  debian_cargo build --locked --target "$triple" --profile "$profile" \
    -Zbuild-std=std,panic_abort "$@"
}

# --- 1 + 2. sync-core and client-wasm ----------------------------------------------------------
# One cargo invocation for both: built separately, sync-core's dependencies (std included) would
# be compiled twice, once as plain objects and once as LTO bitcode for the cdylib, doubling a
# fresh build. sync-core is still built as a package of its own, so a wasm error in it fails here
# whatever client-wasm uses of it.
t=$SECONDS
say "sync-core and client-wasm for $triple, profile $profile ($(/usr/bin/rustc --version))"
wasm_build -p sync-core -p client-wasm
[ -f "$crate_wasm" ] || die "cargo did not produce $crate_wasm"
say "sync-core is wasm-clean; built $(realpath --relative-to="$root" "$crate_wasm") ($(elapsed "$t"))"

# --- 3. wasm-bindgen-cli at the locked version ---------------------------------------------------
want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$want" ] || die "no wasm-bindgen package in Cargo.lock"
bindgen="$tools/bin/wasm-bindgen"
have=$("$bindgen" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  t=$SECONDS
  say "installing wasm-bindgen-cli $want into .tools/ (had: ${have:-none}; takes a few minutes)"
  # The host toolchain (rustup's) builds the tool. No --locked: one of the tool's pinned
  # dependencies is not served by this machine's registry mirror (see toolchain notes).
  env -u CARGO_TARGET_DIR -u RUSTC -u RUSTDOC -u RUSTC_BOOTSTRAP \
    cargo install wasm-bindgen-cli --version "=$want" --root "$tools" --force --quiet
  have=$("$bindgen" --version | awk '{print $2}')
  [ "$have" = "$want" ] || die "installed wasm-bindgen says version $have, wanted $want"
  say "wasm-bindgen $have installed ($(elapsed "$t"))"
fi

# --- 4 + 5. JavaScript packages, shrunk ----------------------------------------------------------
if [ "$use_wasm_opt" != 0 ]; then
  scripts/setup-js.sh
  [ -x "$wasm_opt" ] || die "$wasm_opt missing after scripts/setup-js.sh"
  opt_version=$("$wasm_opt" --version)
else
  opt_version="off"
fi

# Everything the outputs depend on. When it is unchanged and both packages exist, stop here.
fingerprint=$(
  {
    sha256sum "$crate_wasm" | cut -d' ' -f1
    echo "wasm-bindgen $have"
    echo "wasm-opt $opt_version"
    sha256sum "$0" | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
)
pkg="$root/client-wasm/pkg"
pkg_node="$root/client-wasm/pkg-node"
if [ "$(cat "$pkg/.fingerprint" 2>/dev/null)" = "$fingerprint" ] \
  && [ "$(cat "$pkg_node/.fingerprint" 2>/dev/null)" = "$fingerprint" ]; then
  # Their time stamps say "checked against the current sources" (tests/tests/wasm_smoke.rs
  # compares them with the sources'), even when a source edit left the wasm identical.
  touch "$pkg/.fingerprint" "$pkg_node/.fingerprint"
  say "client-wasm/pkg and pkg-node are up to date"
else
  t=$SECONDS
  staging="$target_dir/bindgen-staging"
  rm -rf "$staging"
  mkdir -p "$staging"
  for spec in web:pkg nodejs:pkg-node; do
    js_target=${spec%%:*}
    out="$staging/${spec#*:}"
    "$bindgen" --target "$js_target" --out-dir "$out" "$crate_wasm"
    if [ "$use_wasm_opt" != 0 ]; then
      # After wasm-bindgen, not before: it needs the custom sections wasm-opt would strip.
      "$wasm_opt" -Os --strip-debug --strip-producers \
        "$out/client_wasm_bg.wasm" -o "$out/client_wasm_bg.opt.wasm"
      mv "$out/client_wasm_bg.opt.wasm" "$out/client_wasm_bg.wasm"
    fi
    echo "$fingerprint" >"$out/.fingerprint"
  done
  # A package.json of our own, so that Node reads pkg-node's CommonJS glue as CommonJS whatever
  # a parent directory's package.json says.
  printf '{ "name": "client-wasm", "private": true, "type": "commonjs", "main": "client_wasm.js" }\n' \
    >"$staging/pkg-node/package.json"
  rm -rf "$pkg" "$pkg_node"
  mv "$staging/pkg" "$pkg"
  mv "$staging/pkg-node" "$pkg_node"
  rmdir "$staging"
  say "wrote client-wasm/pkg and client-wasm/pkg-node (wasm-bindgen $have, wasm-opt: $opt_version; $(elapsed "$t"))"
fi

# --- sizes (GOALS.md P8: ≤ 1 MiB gzipped) --------------------------------------------------------
size_line() { # label file
  local raw gz
  raw=$(stat -c %s "$2")
  gz=$(gzip -9 -c "$2" | wc -c)
  awk -v l="$1" -v r="$raw" -v g="$gz" 'BEGIN {
    printf "[build-wasm] %-34s %9d bytes raw (%7.1f KiB), %8d bytes gzip -9 (%6.1f KiB)\n", l, r, r / 1024, g, g / 1024
  }'
}
size_line "cargo output (before bindgen/opt)" "$crate_wasm"
size_line "pkg/client_wasm_bg.wasm" "$pkg/client_wasm_bg.wasm"
size_line "pkg/client_wasm.js" "$pkg/client_wasm.js"
size_line "js/learnsync.js (the shell)" "$root/client-wasm/js/learnsync.js"
