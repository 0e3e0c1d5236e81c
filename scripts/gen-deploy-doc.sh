#!/usr/bin/env bash
# Regenerates the configuration reference in docs/deploy.md from `learnsync … --help`
# (tests/tests/ops_deploy_doc.rs checks that the two agree).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p learnsync
LEARNSYNC_UPDATE_DOCS=1 cargo nextest run -p e2e --test ops_deploy_doc configuration_reference
