#!/usr/bin/env bash
# The API contract, checked from outside: schemathesis (from PyPI) generates requests from the
# server's own /openapi.json, valid and invalid, sends them to a real server with an admin token,
# and checks every answer against the document (--checks all). Zero failures, or this fails.
#
#   tests/contract/run.sh [--max-examples N]     # default 10 examples per operation (about 3.5 minutes: long-polls wait)
#
# Needs: a built `taskwarden` binary (TASKWARDEN_BIN, default target/debug/taskwarden) and
# python3. Installs schemathesis into target/contract-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
examples=10
if [[ "${1:-}" == "--max-examples" ]]; then examples="$2"; fi
bin="${TASKWARDEN_BIN:-target/debug/taskwarden}"
venv=target/contract-venv
if [[ ! -x "$venv/bin/schemathesis" || ! -x "$venv/bin/openapi-spec-validator" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/contract/requirements.txt
fi
work="$(mktemp -d)"
port="${TASKWARDEN_CONTRACT_PORT:-17433}"
cleanup() { [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
token="$("$bin" token create --data-dir "$work/data" --role admin --name contract --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
"$bin" server --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
# The document itself must be valid OpenAPI 3.1.
curl -fs "http://127.0.0.1:$port/openapi.json" >"$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
status=0
# Revoking tokens is run apart, last: the stateful phase follows GET /v1/tokens to revoke and
# would revoke the run's own token, after which every later operation saw only 401.
run() {
  "$venv/bin/schemathesis" --config-file tests/contract/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --url "http://127.0.0.1:$port" -H "Authorization: Bearer $token" --checks all \
    --max-examples "$examples" --seed 1 --no-color --report junit --report-dir "$work/report" "$@" || status=$?
}
revoke='^/v1/tokens/\{id\}/revoke$'
run --exclude-path-regex "$revoke"
# The run's token must still work: else the operations after it lost it were never tested.
if ! curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/me" >/dev/null; then
  echo "the run lost its own token (revoked?): operations after that saw only 401 and were not tested" >&2
  status=1
fi
run --include-path-regex "$revoke" --phases examples,coverage,fuzzing
if ! kill -0 "$server" 2>/dev/null; then
  echo "the server died during the run:" >&2; tail -20 "$work/server.log" >&2; exit 1
fi
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked during the run:" >&2; grep -A5 panicked "$work/server.log" >&2; exit 1
fi
exit "$status"
