//! The PostgreSQL schema, versioned in `schema_migrations`.
//!
//! Migrations are embedded in the binary and append-only. Applying them takes an advisory lock
//! on the schema's name, so nodes starting together take turns: the first applies, the rest find
//! nothing to do. A migration that drops data is marked destructive and is applied only when the
//! caller says so explicitly (`taskwarden migrate --allow-destructive`).

use tokio_postgres::NoTls;

use super::db_error;
use crate::{Result, StoreError};

struct Migration {
    description: &'static str,
    destructive: bool,
    sql: &'static str,
}

/// Entry `i` moves the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "tasks, attempts, idempotency keys, workers, workflows, leases",
        destructive: false,
        sql: r#"
-- A task is its JSON document (`doc`: the task with its attempt history, as text so payloads and
-- results keep their bytes) plus copies of what queries filter and sort on.
CREATE TABLE tasks (
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    id               uuid PRIMARY KEY,
    queue            text NOT NULL,
    kind             text NOT NULL,
    priority         int4 NOT NULL,
    state            text NOT NULL,
    run_at           int8 NOT NULL,
    lease_expires_at int8,
    lease_worker     text,
    finished_at      int8,
    workflow_id      uuid,
    node             text COLLATE "C",
    parent_count     int4 NOT NULL DEFAULT 0,
    -- Parents not yet finished; a workflow task becomes ready when this reaches zero.
    pending_parents  int4 NOT NULL DEFAULT 0,
    doc              text NOT NULL
);
-- Leasing: the best ready task of a queue is the first entry of this index.
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, id) WHERE state = 'ready';
CREATE INDEX tasks_scheduled ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_by_queue ON tasks (queue, id);
CREATE INDEX tasks_dead ON tasks (id) WHERE state IN ('failed', 'cancelled');
CREATE INDEX tasks_by_workflow ON tasks (workflow_id, node) WHERE workflow_id IS NOT NULL;
-- Retention: finished plain tasks, oldest first.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL AND workflow_id IS NULL;

CREATE TABLE idempotency_keys (
    key        text PRIMARY KEY,
    task_id    uuid NOT NULL,
    created_at int8 NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_by_task ON idempotency_keys (task_id);

CREATE TABLE workers (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    queues        text NOT NULL,
    concurrency   int4 NOT NULL,
    registered_at int8 NOT NULL,
    last_seen_at  int8 NOT NULL
);

CREATE TABLE task_edges (
    parent_id uuid NOT NULL,
    child_id  uuid NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX task_edges_by_child ON task_edges (child_id, parent_id);

CREATE TABLE workflows (
    id             uuid PRIMARY KEY,
    name           text,
    failure_policy text NOT NULL,
    state          text NOT NULL,
    total          int4 NOT NULL,
    succeeded      int4 NOT NULL DEFAULT 0,
    failed         int4 NOT NULL DEFAULT 0,
    -- Failures a fan-out's own policy dealt with (collected, or outvoted by a quorum).
    handled        int4 NOT NULL DEFAULT 0,
    -- The task whose result is the workflow's (its single sink), if there is one.
    result_task    uuid,
    error          text,
    created_at     int8 NOT NULL,
    finished_at    int8
);
CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;

-- A fan-out with a failure policy of its own, keyed by its join. Its members are the join's parents.
CREATE TABLE fanouts (
    join_id   uuid PRIMARY KEY,
    policy    text NOT NULL,
    total     int4 NOT NULL,
    succeeded int4 NOT NULL DEFAULT 0,
    failed    int4 NOT NULL DEFAULT 0,
    decided   bool NOT NULL DEFAULT false
);

-- Named leases held in the database (the leader lease of the background loops).
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at int8 NOT NULL
);
"#,
    },
    Migration {
        description: "vacuum the task tables early: they churn like a queue",
        destructive: false,
        sql: r#"
-- Every task is inserted, updated a few times and (past retention) deleted, so the default
-- thresholds (a fifth of the table dead before a vacuum) let a busy queue bloat. Vacuum after 2%.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                       autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idempotency_keys SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE task_edges SET (autovacuum_vacuum_scale_factor = 0.02);
"#,
    },
    Migration {
        description: "queues that can be paused and weighted; finished tasks by time for throughput",
        destructive: false,
        sql: r#"
-- Queues with settings of their own. A queue needs no row to exist: it has the defaults.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     bool NOT NULL DEFAULT false,
    weight     int4 NOT NULL DEFAULT 1,
    updated_at int8 NOT NULL
);
-- Finished tasks by time, workflow tasks too: throughput per queue, and retention.
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"#,
    },
    Migration {
        description: "ready tasks of a queue oldest first, for aging",
        destructive: false,
        sql: r#"
-- Ready tasks of a queue oldest first, whatever their priority: aging looks at them too.
CREATE INDEX tasks_ready_fifo ON tasks (queue, id) WHERE state = 'ready';
"#,
    },
    Migration {
        description: "scheduling: task needs, worker capacity and labels, queue limits, rate buckets, cron",
        destructive: false,
        sql: r#"
-- Whether a task asks for resources or labels, and its concurrency key (the rest is in `doc`).
ALTER TABLE tasks ADD COLUMN constrained boolean NOT NULL DEFAULT false;
ALTER TABLE tasks ADD COLUMN concurrency_key text;
-- Concurrency limits count running tasks per queue and per key.
CREATE INDEX tasks_running_by_queue ON tasks (queue, concurrency_key) WHERE state = 'running';
-- A worker's used capacity: its running tasks that ask for resources.
CREATE INDEX tasks_held ON tasks (lease_worker) WHERE state = 'running' AND constrained;
ALTER TABLE workers ADD COLUMN capacity text NOT NULL DEFAULT '{}';
ALTER TABLE workers ADD COLUMN labels text NOT NULL DEFAULT '{}';
ALTER TABLE queues ADD COLUMN limits text NOT NULL DEFAULT '{}';
-- Token buckets of rate limits; key '' is the queue's own. A missing bucket is a full one.
CREATE TABLE rate_buckets (
    queue  text NOT NULL,
    key    text NOT NULL,
    tokens float8 NOT NULL,
    at     int8 NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE TABLE cron_schedules (
    name       text PRIMARY KEY,
    spec       text NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    next_run   int8 NOT NULL,
    last_fired int8,
    created_at int8 NOT NULL
);
"#,
    },
    Migration {
        description: "scheduling: the resources a task asks for in a column of their own; running tasks by worker",
        destructive: false,
        sql: r#"
-- A worker's used capacity sums these over its running tasks, without parsing whole documents.
ALTER TABLE tasks ADD COLUMN resources jsonb;
UPDATE tasks SET resources = doc::jsonb -> 'needs' -> 'resources'
    WHERE constrained AND doc::jsonb -> 'needs' ? 'resources';
-- A worker's running tasks, all of them: how busy it is (for least-loaded hand-off) counts them.
CREATE INDEX tasks_running_by_worker ON tasks (lease_worker) WHERE state = 'running';
DROP INDEX tasks_held;
"#,
    },
    Migration {
        description: "security: API tokens (only their hashes), the audit log, the token that registered a worker",
        destructive: false,
        sql: r#"
CREATE TABLE tokens (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL,
    queues       text NOT NULL,
    payloads     boolean NOT NULL,
    secret_hash  text NOT NULL UNIQUE,
    created_at   int8 NOT NULL,
    expires_at   int8,
    revoked_at   int8,
    last_used_at int8
);
-- A name picks one live token; a revoked token's name may be used again.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE audit_log (
    seq    bigserial PRIMARY KEY,
    at     int8 NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail text
);
CREATE INDEX audit_log_by_time ON audit_log (at);
ALTER TABLE workers ADD COLUMN owner text;
"#,
    },
    Migration {
        description: "ready tasks of a queue by how long they waited, in an order no other index gives",
        destructive: false,
        sql: r#"
-- Aging reads a queue's longest-waiting ready tasks. Read by id, the primary key gave the same
-- order, and once ANALYZE had seen every task ready the planner chose it, stepping over every
-- finished row on each fetch. By (run_at, id), only this index gives the order.
CREATE INDEX tasks_ready_by_age ON tasks (queue, run_at, id) WHERE state = 'ready';
DROP INDEX tasks_ready_fifo;
"#,
    },
    Migration {
        description: "the kinds a worker has handlers for",
        destructive: false,
        sql: r#"
-- NULL: the worker did not say, and takes any kind.
ALTER TABLE workers ADD COLUMN kinds text[];
"#,
    },
    Migration {
        description: "the JSON Schema of a kind's payloads",
        destructive: false,
        sql: r#"
CREATE TABLE kind_schemas (
    kind text PRIMARY KEY,
    schema text NOT NULL,
    registered_at int8 NOT NULL
);
"#,
    },
    Migration {
        description: "tasks that expire unstarted",
        destructive: false,
        sql: r#"
-- A task not started by expires_at is dropped as expired; the sweep finds them here.
ALTER TABLE tasks ADD COLUMN expires_at int8;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'ready');
"#,
    },
    Migration {
        description: "the event log",
        destructive: false,
        sql: r#"
-- Placed by the writing transaction (tx), then by number: readers see only what transactions
-- older than every running one wrote, so nothing can commit behind a reader (see events.rs).
CREATE TABLE events (
    tx          int8 NOT NULL DEFAULT (pg_current_xact_id()::text::int8),
    id          int8 GENERATED ALWAYS AS IDENTITY,
    at          int8 NOT NULL,
    type        text NOT NULL,
    queue       text,
    kind        text,
    task_id     uuid,
    workflow_id uuid,
    attempt     int4,
    tags        text,
    data        text NOT NULL,
    PRIMARY KEY (tx, id)
);
"#,
    },
    Migration {
        description: "task logs",
        destructive: false,
        sql: r#"
-- The lines handlers log, per task, numbered across its attempts.
CREATE TABLE task_logs (
    task_id uuid NOT NULL,
    seq     int8 NOT NULL,
    attempt int4 NOT NULL,
    at      int8 NOT NULL,
    line    text NOT NULL,
    PRIMARY KEY (task_id, seq)
);
"#,
    },
    Migration {
        description: "per-queue history by the minute",
        destructive: false,
        sql: r#"
-- Rolled up from the event log by the leader; `rollups` says how far each roll-up has read.
CREATE TABLE stats_minutes (
    minute      int8 NOT NULL,
    queue       text NOT NULL,
    submitted   int8 NOT NULL,
    started     int8 NOT NULL,
    succeeded   int8 NOT NULL,
    failed      int8 NOT NULL,
    retried     int8 NOT NULL,
    cancelled   int8 NOT NULL,
    run_us_sum  int8 NOT NULL,
    run_count   int8 NOT NULL,
    wait_us_sum int8 NOT NULL,
    wait_count  int8 NOT NULL,
    PRIMARY KEY (minute, queue)
);
CREATE TABLE rollups (
    name text PRIMARY KEY,
    tx   int8 NOT NULL,
    seq  int8 NOT NULL
);
"#,
    },
    Migration {
        description: "webhooks and their deliveries",
        destructive: false,
        sql: r#"
-- Each endpoint is a JSON document (url, secret, filter, position, failures).
CREATE TABLE webhooks (
    name text PRIMARY KEY,
    doc  text NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq     int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook text NOT NULL,
    at      int8 NOT NULL,
    doc     text NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, seq);
"#,
    },
];

/// What `migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema version found.
    pub from: usize,
    /// The schema version left.
    pub to: usize,
    /// Descriptions of the migrations applied, in order.
    pub applied: Vec<String>,
}

async fn connect(pg: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = pg.connect(NoTls).await.map_err(db_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection ended");
        }
    });
    Ok(client)
}

async fn version(client: &tokio_postgres::Client) -> Result<usize> {
    let row =
        client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(db_error)?;
    Ok(row.get::<_, i32>(0) as usize)
}

fn too_new(found: usize, known: usize) -> StoreError {
    StoreError::Internal(format!(
        "the database schema is at version {found}, newer than this binary knows ({known}); upgrade taskwarden"
    ))
}

pub(crate) async fn migrate(
    pg: &tokio_postgres::Config,
    schema: &str,
    allow_destructive: bool,
) -> Result<MigrationReport> {
    apply(pg, schema, MIGRATIONS, allow_destructive).await
}

/// Applies `migrations` (the embedded ones, or a test's) up to the last.
async fn apply(
    pg: &tokio_postgres::Config,
    schema: &str,
    migrations: &[Migration],
    allow_destructive: bool,
) -> Result<MigrationReport> {
    let mut client = connect(pg).await?;
    // Session-level: held across the migrations' own transactions, released on disconnect.
    client
        .execute("SELECT pg_advisory_lock(hashtext('taskwarden migrate ' || $1))", &[&schema])
        .await
        .map_err(db_error)?;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; \
             CREATE TABLE IF NOT EXISTS schema_migrations (version int4 PRIMARY KEY, description text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await
        .map_err(db_error)?;
    let from = version(&client).await?;
    if from > migrations.len() {
        return Err(too_new(from, migrations.len()));
    }
    let pending = &migrations[from..];
    if let Some(m) = pending.iter().find(|m| m.destructive && !allow_destructive) {
        return Err(StoreError::Conflict(format!(
            "migration \"{}\" drops data; run `taskwarden migrate --allow-destructive` to apply it",
            m.description
        )));
    }
    let mut applied = Vec::new();
    for (i, m) in pending.iter().enumerate() {
        let tx = client.transaction().await.map_err(db_error)?;
        tx.batch_execute(m.sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[&((from + i + 1) as i32), &m.description],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(version = from + i + 1, description = m.description, "applied a migration");
        applied.push(m.description.to_owned());
    }
    Ok(MigrationReport { from, to: migrations.len(), applied })
}

/// Fails unless the schema is exactly at the version this binary expects.
pub(crate) async fn check(pg: &tokio_postgres::Config, schema: &str) -> Result<()> {
    let client = connect(pg).await?;
    let exists = client
        .query_one("SELECT to_regclass(quote_ident($1) || '.schema_migrations') IS NOT NULL", &[&schema])
        .await
        .map_err(db_error)?;
    let found = if exists.get(0) { version(&client).await? } else { 0 };
    match found.cmp(&MIGRATIONS.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(too_new(found, MIGRATIONS.len())),
        std::cmp::Ordering::Less => Err(StoreError::Conflict(format!(
            "the database schema is at version {found} of {}; run `taskwarden migrate`",
            MIGRATIONS.len()
        ))),
    }
}

pub(crate) async fn drop(pg: &tokio_postgres::Config, schema: &str) -> Result<()> {
    let client = connect(pg).await?;
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.map_err(db_error)
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use super::*;
    use crate::pg_testing::TestSchema;

    const TWO: &[Migration] = &[
        Migration { description: "make a table", destructive: false, sql: "CREATE TABLE kept (n int4)" },
        Migration { description: "drop it", destructive: true, sql: "DROP TABLE kept" },
    ];

    #[tokio::test]
    async fn a_destructive_migration_waits_for_an_explicit_yes_and_a_newer_schema_is_refused() {
        let Some(schema) = TestSchema::new("destructive").await else { return };
        let pg = super::super::pg_config(&schema.config()).unwrap();
        let refused = apply(&pg, &schema.name, TWO, false).await.unwrap_err();
        assert!(refused.to_string().contains("--allow-destructive"), "{refused}");
        let first = apply(&pg, &schema.name, &TWO[..1], false).await.unwrap();
        assert_eq!((first.from, first.to), (0, 1), "the refused run applied nothing");
        let applied = apply(&pg, &schema.name, TWO, true).await.unwrap();
        assert_eq!((applied.from, applied.applied.len()), (1, 1));
        let older = apply(&pg, &schema.name, &TWO[..1], false).await.unwrap_err();
        assert!(older.to_string().contains("newer than this binary knows"), "{older}");
    }
}
