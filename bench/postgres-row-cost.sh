#!/usr/bin/env bash
# Where a single submit's time goes on PostgreSQL, without Taskwarden's server in the way: pgbench
# (one client, prepared statements) runs, one transaction each,
#   probe  - the one-column INSERT the users'-shape bench divides by;
#   row    - a plain INSERT of one ready task row into a real Taskwarden tasks table (its index
#            entries and its document);
#   submit - the statement a plain submit sends: that row through unnest() plus the NOTIFY.
# The schema comes from a briefly started `taskwarden server` and is dropped afterwards.
# Usage: DATABASE_URL=postgres://... bench/postgres-row-cost.sh [seconds per measurement, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
secs="${1:-5}"
schema="rowcost_$$"
cargo build --release --quiet -p taskwarden
work=$(mktemp -d)
trap 'psql -q "$url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1; rm -rf "$work"' EXIT

# Migrations run on start; the server is stopped once it listens.
target/release/taskwarden server --listen 127.0.0.1:0 --database "$url" --database-schema "$schema" \
  >"$work/server.out" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q http "$work/server.out" && break; sleep 0.1; done
kill "$server"; wait "$server" 2>/dev/null || true
psql -q "$url" -c "CREATE TABLE $schema.probe (n int8)"

# A document like a no-op task's; no `:word` in it (pgbench would read that as a variable).
doc='{"queue":"q","kind":"echo","payload":0,"priority":0,"tags":[],"max_attempts":3,"timeout_ms":300000,"lease_timeout_ms":30000,"attempts":[]}'
echo "INSERT INTO $schema.probe VALUES (1);" >"$work/probe.sql"
echo "INSERT INTO $schema.tasks (id, queue, kind, priority, state, run_at, doc) VALUES (gen_random_uuid(), 'q', 'echo', 0, 'ready', 1, '$doc');" >"$work/row.sql"
cat >"$work/submit.sql" <<EOF
WITH inserted AS (INSERT INTO $schema.tasks (id, queue, kind, priority, state, run_at, lease_expires_at, lease_worker, finished_at, workflow_id, node, parent_count, pending_parents, doc, constrained, concurrency_key, resources) SELECT id, queue, kind, priority, state, run_at, lx, lw, fin, wf, node, pc, pc, doc, con, ck, res::jsonb FROM unnest(ARRAY[gen_random_uuid()], ARRAY['q'], ARRAY['echo'], ARRAY[0], ARRAY['ready'], ARRAY[1::int8], ARRAY[NULL::int8], ARRAY[NULL::text], ARRAY[NULL::int8], ARRAY[NULL::uuid], ARRAY[NULL::text], ARRAY[0], ARRAY['$doc'], ARRAY[false], ARRAY[NULL::text], ARRAY[NULL::text]) WITH ORDINALITY AS u(id, queue, kind, priority, state, run_at, lx, lw, fin, wf, node, pc, doc, con, ck, res, ord) ORDER BY ord RETURNING 1) SELECT pg_notify('taskwarden_rowcost', 'q');
EOF

for round in 1 2 3; do
  for what in probe row submit; do
    tps=$(pgbench -n -M prepared -T "$secs" -c 1 -f "$work/$what.sql" "$url" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    printf 'round %s  %-6s %8.0f commits/s\n' "$round" "$what" "$tps"
  done
done
