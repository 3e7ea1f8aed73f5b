#!/usr/bin/env bash
# Runs `taskwarden bench` with two builds in turn, round after round, and prints each figure's
# median for both side by side with their ratio: on a noisy machine only figures taken in the
# same run, interleaved, compare like with like.
#
# Usage: bench/compare.sh BASE_REV [ROUNDS] [--python] [-- bench args...]
#   bench/compare.sh 43bb35e~1 5 -- --only e2e
#   bench/compare.sh main~3 3 -- --only shape --shape-tasks 5000
#   bench/compare.sh main~1 5 --python            # the Python SDK's bench/bench.py instead
# With --python, the SDK's virtualenv (sdk/python/run-tests.sh makes it) runs
# sdk/python/bench/bench.py against a server of each build.
# BASE_REV is built into target/compare/BASE (once per revision); this checkout's build is the
# other side. Each round runs each build once with --runs 1, alternating which goes first.
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev=${1:?usage: bench/compare.sh BASE_REV [ROUNDS] [-- bench args]}
shift
rounds=3
if [[ $# -gt 0 && $1 != "--" && $1 != "--python" ]]; then rounds=$1; shift; fi
python=""
if [[ ${1:-} == "--python" ]]; then python=${TASKWARDEN_PY_VENV:-$PWD/target/python-venv}/bin/python; shift; fi
[[ ${1:-} == "--" ]] && shift
base_sha=$(git rev-parse --short "$base_rev")
base_bin="target/compare/$base_sha/taskwarden"
if [[ ! -x $base_bin ]]; then
  tree=$(mktemp -d)
  git worktree add --quiet --detach "$tree" "$base_sha"
  # A target directory of its own (kept for the next comparison): sharing this checkout's would
  # leave target/release/taskwarden pointing at whichever build linked last.
  CARGO_TARGET_DIR="$PWD/target/compare-build" cargo build --release --quiet -p taskwarden --manifest-path "$tree/Cargo.toml"
  mkdir -p "$(dirname "$base_bin")"
  cp target/compare-build/release/taskwarden "$base_bin"
  git worktree remove --force "$tree"
fi
cargo build --release --quiet -p taskwarden
new_bin=target/release/taskwarden
out=$(mktemp -d)
for ((round = 1; round <= rounds; round++)); do
  order=("$base_bin:base" "$new_bin:new")
  ((round % 2 == 0)) && order=("$new_bin:new" "$base_bin:base")
  for entry in "${order[@]}"; do
    bin=${entry%%:*} side=${entry##*:}
    echo "round $round/$rounds: $side ($bin)" >&2
    if [[ -n $python ]]; then
      TASKWARDEN_BIN="$bin" "$python" sdk/python/bench/bench.py --runs 1 "$@" > "$out/$side.$round" 2>/dev/null
    else
      "$bin" bench --runs 1 "$@" > "$out/$side.$round" 2>/dev/null
    fi
  done
done
python3 - "$out" "$rounds" "$base_sha" <<'PY'
import re, statistics, sys, pathlib
out, rounds, base = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
row = re.compile(r"^\| (.+?) \| ([0-9.]+) (\S.*?) \|$")
figures = {}
for side in ("base", "new"):
    for r in range(1, rounds + 1):
        for line in (out / f"{side}.{r}").read_text().splitlines():
            m = row.match(line.strip())
            if m:
                figures.setdefault((m[1], m[3]), {"base": [], "new": []})[side].append(float(m[2]))
print(f"| measurement (median of {rounds} interleaved runs) | base {base} | this build | new / base | runs: base; new |")
print("|---|---|---|---|---|")
for (name, unit), v in figures.items():
    if v["base"] and v["new"]:
        b, n = statistics.median(v["base"]), statistics.median(v["new"])
        runs = "; ".join(" ".join(f"{x:.4g}" for x in v[side]) for side in ("base", "new"))
        print(f"| {name} | {b:.2f} {unit} | {n:.2f} {unit} | {n / b:.3f} | {runs} |")
PY
