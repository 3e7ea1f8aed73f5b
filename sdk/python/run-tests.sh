#!/usr/bin/env bash
# The Python SDK's checks, from a machine with only python3: makes a virtualenv under the
# repository's target/python-venv, installs the SDK with its test extras, then runs ruff (lint
# and format), mypy --strict and pytest against real `taskwarden server` processes.
#
# The server binary: TASKWARDEN_BIN, else target/debug or target/release of this repository
# (the checkout's own build, as `cargo test` leaves it), else `taskwarden` on PATH, else built
# with cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${TASKWARDEN_PY_VENV:-$root/target/python-venv}"

echo "== python virtualenv ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || {
    echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$here[test]"

echo "== server binary"
if [ -z "${TASKWARDEN_BIN:-}" ]; then
  for build in debug release; do
    if [ -x "$root/target/$build/taskwarden" ]; then
      export TASKWARDEN_BIN="$root/target/$build/taskwarden"
      break
    fi
  done
  if [ -z "${TASKWARDEN_BIN:-}" ] && command -v taskwarden >/dev/null 2>&1; then
    export TASKWARDEN_BIN="$(command -v taskwarden)"
  fi
  if [ -z "${TASKWARDEN_BIN:-}" ]; then
    if command -v cargo >/dev/null 2>&1; then
      (cd "$root" && cargo build --locked --bin taskwarden)
      export TASKWARDEN_BIN="$root/target/debug/taskwarden"
    else
      echo "no taskwarden binary: set TASKWARDEN_BIN or build it (cargo build)" >&2
      exit 1
    fi
  fi
fi
echo "${TASKWARDEN_BIN:-$(command -v taskwarden)}"

cd "$here"
# The repository's own Python outside the SDK (bench/) is held to the SDK's rules too.
echo "== ruff check"
"$venv/bin/ruff" check . "$root/bench"
echo "== ruff format --check"
"$venv/bin/ruff" format --check . "$root/bench"
echo "== mypy --strict"
"$venv/bin/mypy" --strict
"$venv/bin/mypy" --strict "$root"/bench/*.py
echo "== pytest (embedded store)"
"$venv/bin/pytest" "$@"

# Again on PostgreSQL where there is one: TASKWARDEN_TEST_DATABASE_URL (the Rust tests' variable),
# default the local one. TASKWARDEN_REQUIRE_POSTGRES=1 (CI) makes its absence a failure.
pg="${TASKWARDEN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if "$venv/bin/python" -c "import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=5).close()" "$pg" 2>/dev/null; then
  echo "== pytest (PostgreSQL)"
  TASKWARDEN_TEST_POSTGRES="$pg" "$venv/bin/pytest" "$@"
elif [ "${TASKWARDEN_REQUIRE_POSTGRES:-}" = "1" ]; then
  echo "PostgreSQL is not reachable at $pg, and TASKWARDEN_REQUIRE_POSTGRES=1" >&2
  exit 1
else
  echo "SKIPPED: the PostgreSQL run (no PostgreSQL at $pg)"
fi
