//! Scheduling state on PostgreSQL: what the limits gate reads and writes (running counts, token
//! buckets, the worker's fit), the needs of ready tasks, and cron schedules.
//!
//! Counts read by one node's fetch must not be changed by another's before it commits, so a fetch
//! from a limited queue first takes a transaction-scoped advisory lock on the queue (and on the
//! worker when capacity is involved). Fetches from unlimited queues take no such lock.

use deadpool_postgres::GenericClient;
use taskwarden_core::cron::{CronInfo, CronSpec};
use taskwarden_core::limits::{Bucket, Gate, WorkerFit};
use taskwarden_core::placement::{Resources, WorkerView};
use taskwarden_core::{Needs, Task, TaskId, Timestamp};

use super::rows::{Params, Tx, execute, query, query_opt};
use super::{PgResult, Shared, Touched, ops};
use crate::StoreError;
use crate::params::*;

fn json<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

/// The settings of these queues (all queues when `queues` is empty).
pub(crate) async fn settings(c: &impl GenericClient, queues: &[String]) -> PgResult<Vec<QueueSettings>> {
    let rows = if queues.is_empty() {
        query(c, "SELECT name, paused, weight, limits FROM queues ORDER BY name", &[]).await?
    } else {
        query(c, "SELECT name, paused, weight, limits FROM queues WHERE name = ANY($1) ORDER BY name", &[&queues])
            .await?
    };
    Ok(rows
        .iter()
        .map(|r| QueueSettings {
            name: r.get(0),
            paused: r.get(1),
            weight: r.get::<_, i32>(2) as u32,
            limits: json(r.get(3)),
        })
        .collect())
}

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// Takes the transaction-scoped advisory lock on `kind/name` within this deployment's schema.
pub(crate) async fn lock(tx: &Tx<'_>, shared: &Shared, kind: &str, name: &str) -> PgResult<()> {
    let key = format!("{}/{kind}/{name}", shared.channel);
    execute(tx, LOCK, &[&key]).await?;
    Ok(())
}

/// The resources each of worker `$1`'s running tasks holds, one row per (task, resource): summed
/// by PostgreSQL from the `resources` column, so no task document is read.
macro_rules! held_by_worker {
    () => {
        "FROM tasks t CROSS JOIN LATERAL jsonb_each_text(t.resources) r \
         WHERE t.state = 'running' AND t.lease_worker = $1 AND t.constrained"
    };
}

/// What worker `$1`'s running tasks hold, but for those it says it has finished (`$2`).
const USED_BY: &str = concat!(
    "SELECT r.key, SUM(r.value::bigint)::bigint ",
    held_by_worker!(),
    " AND NOT (t.id = ANY($2)) GROUP BY r.key"
);

fn used_from(rows: Vec<tokio_postgres::Row>) -> Resources {
    Resources(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)).collect())
}

/// Takes the worker's lock (two fetches for one worker must not both count its capacity free),
/// then reads its capacity and labels as it registered them, and what its running tasks hold
/// (but for those it says it has `finished`). With the statements prepared first, the three go
/// out in one round trip: the connection pipelines them and PostgreSQL runs them in the order
/// sent, the lock first.
pub(crate) async fn lock_worker_fit(
    tx: &Tx<'_>,
    shared: &Shared,
    worker_id: &str,
    finished: &[TaskId],
) -> PgResult<WorkerFit> {
    let finished: Vec<uuid::Uuid> = finished.iter().map(|id| super::rows::uuid(*id)).collect();
    let key = format!("{}/worker/{worker_id}", shared.channel);
    let lock = tx.prepare_cached(LOCK).await?;
    let fit = tx.prepare_cached("SELECT capacity, labels FROM workers WHERE id = $1").await?;
    let used = tx.prepare_cached(USED_BY).await?;
    let (lock_params, fit_params): (&Params<'_>, &Params<'_>) = (&[&key], &[&worker_id]);
    let used_params: &Params<'_> = &[&worker_id, &finished];
    let (_, row, used) = tokio::try_join!(
        tx.execute(&lock, lock_params),
        tx.query_opt(&fit, fit_params),
        tx.query(&used, used_params),
    )?;
    let (capacity, labels) = row.map(|r| (json(r.get(0)), json(r.get(1)))).unwrap_or_default();
    Ok(WorkerFit { capacity, labels, used: used_from(used) })
}

/// How busy the worker is, from 0 (idle) to 1 (see [`WorkerView::busy`]): its share of slots
/// in use, or of a resource, whichever is larger; and whether any other worker heard from since
/// `live_since` serves one of `queues` (if none does, there is nobody less loaded to yield to).
/// One round trip. An unknown worker counts as idle.
pub(crate) async fn load(
    c: &impl GenericClient,
    worker_id: &str,
    queues: &[String],
    live_since: Timestamp,
) -> PgResult<(f64, bool)> {
    const SQL: &str = concat!(
        "SELECT w.concurrency, w.capacity, ",
        "(SELECT COUNT(*) FROM tasks WHERE state = 'running' AND lease_worker = $1), ",
        "(SELECT jsonb_object_agg(s.key, s.n)::text FROM (SELECT r.key, SUM(r.value::bigint) AS n ",
        held_by_worker!(),
        " GROUP BY r.key) s), ",
        "EXISTS (SELECT 1 FROM workers o WHERE o.id <> $1 AND o.last_seen_at >= $2 AND o.queues::jsonb ?| $3) ",
        "FROM workers w WHERE w.id = $1"
    );
    let Some(row) = query_opt(c, SQL, &[&worker_id, &live_since.as_micros(), &queues]).await? else {
        return Ok((0.0, false));
    };
    let concurrency = row.get::<_, i32>(0).max(1) as u32;
    let running = row.get::<_, i64>(2) as u32;
    let view = WorkerView {
        queues: Vec::new(),
        capacity: json(row.get(1)),
        used: row.get::<_, Option<&str>>(3).map(json).unwrap_or_default(),
        labels: Default::default(),
        free_slots: concurrency.saturating_sub(running),
        running,
        kinds: Vec::new(), // only its load is asked
    };
    Ok((view.busy(), row.get(4)))
}

/// The (queue, key) pairs as two arrays for `unnest`; a queue-wide pair has a NULL key.
fn columns(keys: &[(String, Option<String>)]) -> (Vec<&str>, Vec<Option<&str>>) {
    keys.iter().map(|(q, k)| (q.as_str(), k.as_deref())).unzip()
}

/// Loads the running counts and token buckets the candidates concern into the gate: one query
/// for all the counts and one for all the buckets, however many keys the candidates carry, sent
/// together (the connection pipelines them).
pub(crate) async fn load_gate(tx: &Tx<'_>, gate: &mut Gate, candidates: &[&Task]) -> PgResult<()> {
    let running = gate.needs_running(candidates.iter().copied());
    let buckets = gate.needs_buckets(candidates.iter().copied());
    let (running_queues, running_keys) = columns(&running);
    let (bucket_queues, bucket_keys) = columns(&buckets);
    // Each count is an index range: the whole queue's, or one key's within it.
    let counts = async {
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let sql = "SELECT k.queue, k.key, CASE WHEN k.key IS NULL \
                   THEN (SELECT COUNT(*) FROM tasks WHERE state = 'running' AND queue = k.queue) \
                   ELSE (SELECT COUNT(*) FROM tasks WHERE state = 'running' AND queue = k.queue \
                         AND concurrency_key = k.key) END \
                   FROM unnest($1::text[], $2::text[]) AS k(queue, key)";
        query(tx, sql, &[&running_queues, &running_keys]).await
    };
    let stored = async {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let sql = "SELECT b.queue, b.key, b.tokens, b.at FROM unnest($1::text[], $2::text[]) AS k(queue, key) \
                   JOIN rate_buckets b ON b.queue = k.queue AND b.key = coalesce(k.key, '')";
        query(tx, sql, &[&bucket_queues, &bucket_keys]).await
    };
    let (counts, stored) = tokio::try_join!(counts, stored)?;
    for r in counts {
        gate.set_running(r.get(0), r.get(1), r.get::<_, i64>(2) as u32);
    }
    for r in stored {
        let key: &str = r.get(1);
        let bucket = Bucket { tokens: r.get(2), at: Timestamp::from_micros(r.get(3)) };
        gate.set_bucket(r.get(0), Some(key).filter(|k| !k.is_empty()), bucket);
    }
    Ok(())
}

/// Writes back the buckets admissions took tokens from, in one statement.
pub(crate) async fn save_buckets(tx: &Tx<'_>, gate: &Gate) -> PgResult<()> {
    let changed = gate.changed_buckets();
    if changed.is_empty() {
        return Ok(());
    }
    let queues: Vec<&str> = changed.iter().map(|c| c.0).collect();
    let keys: Vec<&str> = changed.iter().map(|c| c.1.unwrap_or("")).collect();
    let tokens: Vec<f64> = changed.iter().map(|c| c.2.tokens).collect();
    let at: Vec<i64> = changed.iter().map(|c| c.2.at.as_micros()).collect();
    execute(
        tx,
        "INSERT INTO rate_buckets (queue, key, tokens, at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::int8[]) \
         ON CONFLICT (queue, key) DO UPDATE SET tokens = EXCLUDED.tokens, at = EXCLUDED.at",
        &[&queues, &keys, &tokens, &at],
    )
    .await?;
    Ok(())
}

pub(crate) async fn ready_kinds(c: &impl GenericClient) -> PgResult<Vec<ReadyKind>> {
    let sql = "SELECT queue, kind, COUNT(*) FROM tasks WHERE state = 'ready' GROUP BY 1, 2 LIMIT 10000";
    Ok(query(c, sql, &[])
        .await?
        .iter()
        .map(|r| ReadyKind { queue: r.get(0), kind: r.get(1), count: r.get::<_, i64>(2) as u64 })
        .collect())
}

pub(crate) async fn kind_schemas(c: &impl GenericClient) -> PgResult<Vec<KindSchema>> {
    let sql = "SELECT kind, schema, registered_at FROM kind_schemas ORDER BY kind";
    Ok(query(c, sql, &[])
        .await?
        .iter()
        .map(|r| KindSchema { kind: r.get(0), schema: r.get(1), registered_at: Timestamp::from_micros(r.get(2)) })
        .collect())
}

pub(crate) async fn ready_needs(c: &impl GenericClient) -> PgResult<Vec<ReadyNeeds>> {
    let rows = query(
        c,
        "SELECT queue, (doc::jsonb -> 'needs')::text, COUNT(*) FROM tasks WHERE state = 'ready' AND constrained \
         GROUP BY 1, 2 LIMIT 10000",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| ReadyNeeds { queue: r.get(0), needs: json::<Needs>(r.get(1)), count: r.get::<_, i64>(2) as u64 })
        .filter(|n| n.needs.constrains_worker())
        .collect())
}

const CRON_COLUMNS: &str = "spec, paused, next_run, last_fired, created_at";

fn cron_info(r: &tokio_postgres::Row) -> PgResult<CronInfo> {
    let spec: CronSpec = serde_json::from_str(r.get(0)).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(CronInfo {
        spec,
        paused: r.get(1),
        next_run_at: Timestamp::from_micros(r.get(2)),
        last_fired_at: r.get::<_, Option<i64>>(3).map(Timestamp::from_micros),
        created_at: Timestamp::from_micros(r.get(4)),
    })
}

pub(crate) async fn create_cron(tx: &Tx<'_>, p: &CreateCron) -> PgResult<CronInfo> {
    let spec = serde_json::to_string(&p.spec).expect("plain data serializes");
    let row = query_opt(
        tx,
        &format!(
            "INSERT INTO cron_schedules (name, spec, next_run, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING RETURNING {CRON_COLUMNS}"
        ),
        &[&p.spec.name, &spec, &p.next_run.as_micros(), &p.now.as_micros()],
    )
    .await?;
    match row {
        Some(r) => cron_info(&r),
        None => Err(StoreError::Conflict(format!("a cron schedule named {:?} exists", p.spec.name)).into()),
    }
}

pub(crate) async fn list_crons(c: &impl GenericClient) -> PgResult<Vec<CronInfo>> {
    let rows = query(c, &format!("SELECT {CRON_COLUMNS} FROM cron_schedules ORDER BY name"), &[]).await?;
    rows.iter().map(cron_info).collect()
}

pub(crate) async fn pause_cron(tx: &Tx<'_>, p: &PauseCron) -> PgResult<CronInfo> {
    let row = query_opt(
        tx,
        &format!("UPDATE cron_schedules SET paused = $2, next_run = $3 WHERE name = $1 RETURNING {CRON_COLUMNS}"),
        &[&p.name, &p.paused, &p.next_run.as_micros()],
    )
    .await?;
    cron_info(&row.ok_or(StoreError::NotFound)?)
}

pub(crate) async fn update_cron(tx: &Tx<'_>, p: &UpdateCron) -> PgResult<CronInfo> {
    let spec = serde_json::to_string(&p.spec).expect("plain data serializes");
    let row = query_opt(
        tx,
        &format!("UPDATE cron_schedules SET spec = $2, next_run = $3 WHERE name = $1 RETURNING {CRON_COLUMNS}"),
        &[&p.spec.name, &spec, &p.next_run.as_micros()],
    )
    .await?;
    cron_info(&row.ok_or(StoreError::NotFound)?)
}

pub(crate) async fn delete_cron(tx: &Tx<'_>, name: &str) -> PgResult<()> {
    match execute(tx, "DELETE FROM cron_schedules WHERE name = $1", &[&name]).await? {
        0 => Err(StoreError::NotFound.into()),
        _ => Ok(()),
    }
}

/// Moves the schedule on only if it still stands where the caller saw it; the row lock taken by
/// the update makes a second node's attempt wait, then find it moved and do nothing.
pub(crate) async fn fire_cron(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &FireCron) -> PgResult<bool> {
    let next = p.next_run.unwrap_or(Timestamp::NEVER).as_micros();
    let last_fired = p.tasks.iter().filter_map(|t| t.run_at).max().map(Timestamp::as_micros);
    let moved = execute(
        tx,
        "UPDATE cron_schedules SET next_run = $3, last_fired = COALESCE($4, last_fired) \
         WHERE name = $1 AND next_run = $2 AND NOT paused",
        &[&p.name, &p.expected_next_run.as_micros(), &next, &last_fired],
    )
    .await?;
    if moved == 0 {
        return Ok(false);
    }
    let submit = SubmitTasks { tasks: p.tasks.clone(), idempotency_window: p.idempotency_window, now: p.now };
    ops::submit(tx, st, shared, &submit).await?;
    Ok(true)
}
