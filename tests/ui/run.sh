#!/usr/bin/env bash
# The web dashboard's end-to-end tests: a real server process driven in Debian's Chromium by
# playwright-core (never a browser the test tool downloads), with axe-core checking each page.
# Screenshots land in target/ui-screenshots/.
#
#   tests/ui/run.sh
#
# Needs: a built `taskwarden` binary (TASKWARDEN_BIN, default target/debug/taskwarden; `cargo
# test --workspace` builds it), node 20, and chromium (CHROMIUM_PATH, default /usr/bin/chromium).
# Installs the two npm packages into tests/ui/node_modules on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -d node_modules/playwright-core || ! -d node_modules/axe-core ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 dashboard.test.mjs
