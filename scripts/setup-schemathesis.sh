#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into a virtualenv under the cargo target directory, only
# when it is missing or another version. Prints nothing when it is already there.
# The API fuzzing test (tests/tests/faults_schemathesis.rs) runs $SCHEMATHESIS_VENV/bin/st.
set -euo pipefail
VERSION=4.32.5
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-$root/target}/schemathesis-venv}"
if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
mkdir -p "$(dirname "$venv")"
# One installer at a time (tests and scripts/test.sh may start it together).
exec 9>"$(dirname "$venv")/.schemathesis-venv.lock"
flock 9
if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
echo "installing schemathesis $VERSION into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
"$venv/bin/st" --version
