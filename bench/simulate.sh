#!/usr/bin/env bash
# The placement policy in a deterministic simulation (virtual time, no I/O) on a large mixed
# workload. Usage: bench/simulate.sh [SCALE]   (default 10: 10,040 tasks)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet -p taskwarden-core --example simulate -- "$@"
