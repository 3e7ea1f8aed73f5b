//! The embedded database's schema, versioned with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
-- A rowid table, not WITHOUT ROWID: rows are a few hundred bytes, and new tasks append at the
-- end of the rowid b-tree, which SQLite does without rebalancing.
CREATE TABLE tasks (
    seq              INTEGER PRIMARY KEY,
    id               BLOB NOT NULL UNIQUE,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    tags             TEXT NOT NULL,
    idempotency_key  TEXT,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    attempt_limit    INTEGER NOT NULL,
    backoff          TEXT NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    lease_timeout_ms INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    lease_token      INTEGER,
    lease_worker     TEXT,
    lease_attempt    INTEGER,
    lease_started_at INTEGER,
    lease_expires_at INTEGER,
    lease_deadline   INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    progress         TEXT
);
-- Leasing: the best ready task of a queue is the first entry of this index.
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, id) WHERE state = 'ready';
CREATE INDEX tasks_scheduled ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_by_queue ON tasks (queue, id);
-- No index on state alone: every state change would update it, and it cost a quarter of the
-- write throughput. Lists by state use the partial indexes above, or this one for dead letters;
-- succeeded tasks, the bulk of the table, are found by scanning newest first.
CREATE INDEX tasks_dead ON tasks (id) WHERE state IN ('failed', 'cancelled');

CREATE TABLE attempts (
    task_id     BLOB NOT NULL,
    number      INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (task_id, number)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    task_id    BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    queues        TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Workflows: a task may be a node of a workflow and wait for its parents.
ALTER TABLE tasks ADD COLUMN workflow_id BLOB;
ALTER TABLE tasks ADD COLUMN node TEXT;
ALTER TABLE tasks ADD COLUMN parent_count INTEGER NOT NULL DEFAULT 0;
-- Parents not yet finished; the task becomes ready when this reaches zero.
ALTER TABLE tasks ADD COLUMN pending_parents INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_by_workflow ON tasks (workflow_id, seq) WHERE workflow_id IS NOT NULL;

CREATE TABLE task_edges (
    parent_id BLOB NOT NULL,
    child_id  BLOB NOT NULL,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;
CREATE INDEX task_edges_by_child ON task_edges (child_id, parent_id);

CREATE TABLE workflows (
    seq            INTEGER PRIMARY KEY,
    id             BLOB NOT NULL UNIQUE,
    name           TEXT,
    failure_policy TEXT NOT NULL,
    state          TEXT NOT NULL,
    total          INTEGER NOT NULL,
    succeeded      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    -- Failures a fan-out's own policy dealt with (collected, or outvoted by a quorum).
    handled        INTEGER NOT NULL DEFAULT 0,
    -- The task whose result is the workflow's (its single sink), if there is one.
    result_task    BLOB,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    finished_at    INTEGER
);

-- A fan-out with a failure policy of its own, keyed by its join. Its members are the join's parents.
CREATE TABLE fanouts (
    join_id   BLOB PRIMARY KEY,
    policy    TEXT NOT NULL,
    total     INTEGER NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    decided   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"#,
    r#"
-- Retention: finished plain tasks, oldest first; decided workflows.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL AND workflow_id IS NULL;
CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX idempotency_keys_by_task ON idempotency_keys (task_id);

-- Named leases held in the database (the leader lease of the background loops).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Queues with settings of their own. A queue needs no row to exist: it has the defaults.
CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    weight     INTEGER NOT NULL DEFAULT 1,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Finished tasks by time, workflow tasks too: throughput per queue, and retention.
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"#,
    r#"
-- Ready tasks of a queue oldest first, whatever their priority: aging looks at them too.
CREATE INDEX tasks_ready_fifo ON tasks (queue, id) WHERE state = 'ready';
"#,
    r#"
-- Scheduling: what a task needs (resources, labels, limit keys; JSON, NULL when nothing).
ALTER TABLE tasks ADD COLUMN needs TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
-- Concurrency limits count running tasks per queue and per key.
CREATE INDEX tasks_running_by_queue ON tasks (queue, concurrency_key) WHERE state = 'running';
-- A worker's used capacity: its running tasks that ask for resources.
CREATE INDEX tasks_held ON tasks (lease_worker) WHERE state = 'running' AND needs IS NOT NULL;
ALTER TABLE workers ADD COLUMN capacity TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workers ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE queues ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
-- Token buckets of rate limits; key '' is the queue's own. A missing bucket is a full one.
CREATE TABLE rate_buckets (
    queue  TEXT NOT NULL,
    key    TEXT NOT NULL,
    tokens REAL NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
CREATE TABLE cron_schedules (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    next_run   INTEGER NOT NULL,
    last_fired INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // v7: the writer keeps what running tasks hold in memory (see `ledger`), so the indexes it
    // used to count them are only a cost on every start and finish.
    r#"
DROP INDEX tasks_running_by_queue;
DROP INDEX tasks_held;
"#,
    // v8: API tokens (only their hashes), the audit log, and which token registered a worker.
    r#"
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    queues       TEXT NOT NULL,
    payloads     INTEGER NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
) WITHOUT ROWID;
-- A name picks one live token; a revoked token's name may be used again.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE audit_log (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at);
ALTER TABLE workers ADD COLUMN owner TEXT;
"#,
    // v9: the kinds a worker has handlers for (a JSON array); NULL: it did not say, any kind.
    r#"
ALTER TABLE workers ADD COLUMN kinds TEXT;
"#,
    // v10: the JSON Schema in force for a kind's payloads, as the last worker to register one
    // gave it.
    r#"
CREATE TABLE kind_schemas (
    kind TEXT PRIMARY KEY,
    schema TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
"#,
    // v11: a task not started by its expires_at is dropped as expired; the sweep finds them here.
    r#"
ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'ready');
"#,
    // v12: the event log. Ids are rowids, one more than the largest: pruning never deletes the
    // newest event, so the largest never goes down and an id is never used twice (a reader
    // resuming after an id cannot skip a new event). Not AUTOINCREMENT, whose bookkeeping row
    // cost every event a second write. No other index: readers go forward by id, and pruning
    // takes the oldest ids.
    r#"
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    type        TEXT NOT NULL,
    queue       TEXT,
    kind        TEXT,
    task_id     BLOB,
    workflow_id BLOB,
    attempt     INTEGER,
    tags        TEXT,
    data        TEXT NOT NULL
);
"#,
    // v13: the lines handlers log, per task, numbered across its attempts.
    r#"
CREATE TABLE task_logs (
    task_id BLOB NOT NULL,
    seq     INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
"#,
    // v14: per-queue history by the minute, rolled up from the event log, and where each
    // roll-up of the log stands.
    r#"
CREATE TABLE stats_minutes (
    minute      INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    submitted   INTEGER NOT NULL,
    started     INTEGER NOT NULL,
    succeeded   INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    retried     INTEGER NOT NULL,
    cancelled   INTEGER NOT NULL,
    run_us_sum  INTEGER NOT NULL,
    run_count   INTEGER NOT NULL,
    wait_us_sum INTEGER NOT NULL,
    wait_count  INTEGER NOT NULL,
    PRIMARY KEY (minute, queue)
) WITHOUT ROWID;
CREATE TABLE rollups (
    name TEXT PRIMARY KEY,
    tx   INTEGER NOT NULL,
    seq  INTEGER NOT NULL
);
"#,
    // v15: webhook endpoints (each a JSON document: url, secret, filter, position, failures) and
    // their delivery log.
    r#"
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq     INTEGER PRIMARY KEY,
    webhook TEXT NOT NULL,
    at      INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, seq);
"#,
    // v16: the W3C trace context a task was submitted in.
    r#"
ALTER TABLE tasks ADD COLUMN traceparent TEXT;
"#,
    // v17: the event log in pages, a row per group commit's events (see `events.rs`). The
    // events of v12's table move over a page each, with their ids, in the API's form (the
    // merge patch drops the members that are null).
    r#"
CREATE TABLE event_pages (
    last_id  INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    events   TEXT NOT NULL
);
INSERT INTO event_pages (last_id, first_id, last_at, events)
SELECT id, id, at, json_patch('{}', json_object(
    'type', type,
    'at', strftime('%Y-%m-%dT%H:%M:%S', at / 1000000, 'unixepoch') || printf('.%06dZ', at % 1000000),
    'queue', queue, 'kind', kind,
    'task_id', CASE WHEN task_id IS NOT NULL THEN lower(substr(hex(task_id), 1, 8) || '-' || substr(hex(task_id), 9, 4) || '-' ||
        substr(hex(task_id), 13, 4) || '-' || substr(hex(task_id), 17, 4) || '-' || substr(hex(task_id), 21)) END,
    'workflow_id', CASE WHEN workflow_id IS NOT NULL THEN lower(substr(hex(workflow_id), 1, 8) || '-' || substr(hex(workflow_id), 9, 4) || '-' ||
        substr(hex(workflow_id), 13, 4) || '-' || substr(hex(workflow_id), 17, 4) || '-' || substr(hex(workflow_id), 21)) END,
    'attempt', attempt, 'tags', json(tags), 'data', json(data)))
FROM events ORDER BY id;
DROP TABLE events;
"#,
    // v18: each page's per-minute sums, made as its events were appended (NULL on pages written
    // before: the roll-up parses those); the row `/readyz` rewrites to know the store can commit.
    r#"
ALTER TABLE event_pages ADD COLUMN stats TEXT;
CREATE TABLE ready_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
"#,
    // v19: a small commit's events wait in its tasks' rows for a page (see `events.rs`): each
    // task's, with their ids; and whether any may be waiting (0 while a process defers them).
    r#"
ALTER TABLE tasks ADD COLUMN events BLOB;
CREATE TABLE event_tail (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    clean INTEGER NOT NULL
);
INSERT INTO event_tail (id, clean) VALUES (1, 1);
"#,
];

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// The plan SQLite makes of `sql` with `params` on a fresh database of the real schema, one
/// step a line (`EXPLAIN QUERY PLAN`): what the tests of a query's index hold it to.
#[cfg(test)]
pub(crate) fn query_plan(sql: &str, params: impl rusqlite::Params) -> Vec<String> {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn).unwrap();
    let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    plan.query_map(params, |r| r.get(3)).unwrap().map(Result::unwrap).collect()
}

/// Migrates up to `version` (a test's way to make a database as an older build left it).
pub(crate) fn migrate_to(conn: &mut Connection, version: usize) -> rusqlite::Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS.iter().enumerate().take(version).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
    }
    Ok(())
}
