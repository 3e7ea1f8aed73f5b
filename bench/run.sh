#!/usr/bin/env bash
# Runs the embedded-store benchmark and prints its figures (median of --runs runs).
# Usage: bench/run.sh [--runs 3] [--only single,batch,e2e,latency] [--durability full|relaxed]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p taskwarden
exec target/release/taskwarden bench "$@"
