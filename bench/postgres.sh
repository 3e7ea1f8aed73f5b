#!/usr/bin/env bash
# The benchmark on PostgreSQL: one server node, then three on the same database (a fresh schema,
# dropped afterwards). Prints the median of --runs runs for each.
# Usage: DATABASE_URL=postgres://... bench/postgres.sh [--runs 3] [--e2e-tasks 50000]
set -euo pipefail
cd "$(dirname "$0")/.."
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet -p taskwarden
for nodes in 1 3; do
  target/release/taskwarden bench --database "$url" --nodes "$nodes" --only batch,e2e,latency "$@"
  echo
done
