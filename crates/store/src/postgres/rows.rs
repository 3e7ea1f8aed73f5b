//! Mapping between `tasks` rows and the core's `Task`, and the statements every operation shares.
//!
//! A task row is its JSON document (`doc`, the task with its attempt history) plus copies of the
//! fields that queries filter and sort on. The document is stored as text, so payloads and
//! results come back byte for byte as they were sent.

use deadpool_postgres::GenericClient;
use taskwarden_core::{Task, TaskId};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::events::{EventRows, cte};
use super::{PgResult, Shared};
use crate::StoreError;

pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

pub(crate) fn uuid(id: TaskId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

pub(crate) fn task_id(u: Uuid) -> TaskId {
    TaskId::from_bytes(u.into_bytes())
}

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("a stored row does not parse: {e}"))
}

pub(crate) async fn query(c: &impl GenericClient, sql: &str, params: &Params<'_>) -> PgResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

pub(crate) async fn query_opt(c: &impl GenericClient, sql: &str, params: &Params<'_>) -> PgResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

pub(crate) async fn execute(c: &impl GenericClient, sql: &str, params: &Params<'_>) -> PgResult<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

pub(crate) fn to_doc(task: &Task) -> String {
    serde_json::to_string(task).expect("a task serializes")
}

pub(crate) fn from_doc(doc: &str) -> PgResult<Task> {
    Ok(serde_json::from_str(doc).map_err(bad)?)
}

/// Tasks from rows whose first column is `doc`.
pub(crate) fn tasks(rows: &[Row]) -> PgResult<Vec<Task>> {
    rows.iter().map(|r| from_doc(r.get(0))).collect()
}

pub(crate) fn parse<T: std::str::FromStr>(s: &str) -> PgResult<T>
where
    T::Err: std::fmt::Display,
{
    Ok(s.parse().map_err(bad)?)
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(s: &str) -> PgResult<T> {
    Ok(serde_json::from_str(s).map_err(bad)?)
}

pub(crate) async fn load(c: &impl GenericClient, id: TaskId) -> PgResult<Option<Task>> {
    let row = query_opt(c, "SELECT doc FROM tasks WHERE id = $1", &[&uuid(id)]).await?;
    row.map(|r| from_doc(r.get(0))).transpose()
}

/// Loads a task and locks its row until the transaction ends.
pub(crate) async fn lock(tx: &Tx<'_>, id: TaskId) -> PgResult<Task> {
    let row = query_opt(tx, "SELECT doc FROM tasks WHERE id = $1 FOR UPDATE", &[&uuid(id)]).await?;
    match row {
        Some(r) => from_doc(r.get(0)),
        None => Err(StoreError::NotFound.into()),
    }
}

/// Loads and locks several tasks, in id order so that concurrent callers lock in the same order.
pub(crate) async fn lock_many(tx: &Tx<'_>, ids: &[TaskId]) -> PgResult<Vec<Task>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| uuid(*id)).collect();
    let rows = query(tx, "SELECT doc FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids]).await?;
    tasks(&rows)
}

/// Loads several tasks without locking them, each with its row version (`xmin`, which every
/// update changes), for an optimistic write with [`update_unchanged`]. Cheaper than `FOR UPDATE`,
/// which writes a lock into every row it reads.
pub(crate) async fn load_versioned(tx: &Tx<'_>, ids: &[TaskId]) -> PgResult<Vec<(Task, i64)>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| uuid(*id)).collect();
    let found = query(tx, "SELECT doc, xmin::text::int8 FROM tasks WHERE id = ANY($1)", &[&ids]).await?;
    found.iter().map(|r| Ok((from_doc(r.get(0))?, r.get(1)))).collect()
}

/// The columns copied out of a task, as arrays for one `unnest` statement.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    queue: Vec<String>,
    kind: Vec<String>,
    priority: Vec<i32>,
    state: Vec<&'static str>,
    run_at: Vec<i64>,
    lease_expires_at: Vec<Option<i64>>,
    lease_worker: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
    workflow_id: Vec<Option<Uuid>>,
    node: Vec<Option<String>>,
    parent_count: Vec<i32>,
    doc: Vec<String>,
    constrained: Vec<bool>,
    concurrency_key: Vec<Option<String>>,
    expires_at: Vec<Option<i64>>,
}

impl Columns {
    fn of<'t>(tasks: impl IntoIterator<Item = &'t Task>) -> Columns {
        let mut c = Columns::default();
        for t in tasks {
            c.id.push(uuid(t.id));
            c.queue.push(t.queue.clone());
            c.kind.push(t.kind.clone());
            c.priority.push(t.priority);
            c.state.push(t.state.as_str());
            c.run_at.push(t.run_at.as_micros());
            c.lease_expires_at.push(t.lease.as_ref().map(|l| l.expires_at.as_micros()));
            c.lease_worker.push(t.lease.as_ref().map(|l| l.worker_id.clone()));
            c.finished_at.push(t.finished_at.map(|f| f.as_micros()));
            c.workflow_id.push(t.workflow_id.map(uuid));
            c.node.push(t.node.clone());
            c.parent_count.push(t.parent_count as i32);
            c.doc.push(to_doc(t));
            c.constrained.push(t.needs.constrains_worker());
            c.concurrency_key.push(t.needs.concurrency_key.clone());
            c.expires_at.push(t.expires_at.map(|e| e.as_micros()));
        }
        c
    }
}

/// Inserts new tasks in one statement, in the given order (which is `seq` order).
/// Inserts new tasks in one statement, in their order (a macro, so that `concat!` can wrap it).
macro_rules! insert_tasks {
    () => {
        "INSERT INTO tasks (id, queue, kind, priority, state, run_at, lease_expires_at, lease_worker, \
     finished_at, workflow_id, node, parent_count, pending_parents, doc, constrained, concurrency_key, resources, \
     expires_at) \
     SELECT id, queue, kind, priority, state, run_at, lx, lw, fin, wf, node, pc, pc, doc, con, ck, res::jsonb, ex \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::int8[], $7::int8[], \
     $8::text[], $9::int8[], $10::uuid[], $11::text[], $12::int4[], $13::text[], $14::bool[], $15::text[], \
     $16::text[], $17::int8[]) WITH ORDINALITY \
     AS u(id, queue, kind, priority, state, run_at, lx, lw, fin, wf, node, pc, doc, con, ck, res, ex, ord) ORDER BY ord"
    };
}

pub(crate) async fn insert(tx: &Tx<'_>, shared: &Shared, new: &[Task]) -> PgResult<()> {
    if !new.is_empty() {
        insert_with(tx, shared, new, None).await?;
    }
    Ok(())
}

/// Inserts new tasks and sends the wake-up (`payload` on this node's channel) in one statement,
/// which outside a transaction is a transaction of its own: a plain submit costs one round trip.
pub(crate) async fn insert_notifying(
    c: &impl GenericClient,
    shared: &Shared,
    new: &[Task],
    payload: &str,
) -> PgResult<()> {
    insert_with(c, shared, new, Some((&shared.channel, payload))).await
}

/// Inserts tasks with their `task.submitted` events, and sends the wake-up if asked, in one
/// statement.
async fn insert_with(
    c: &impl GenericClient,
    shared: &Shared,
    new: &[Task],
    notify: Option<(&str, &str)>,
) -> PgResult<()> {
    let cols = Columns::of(new);
    // Written once: what a task asks for never changes.
    let resources: Vec<Option<String>> = new
        .iter()
        .map(|t| &t.needs.resources)
        .map(|r| (!r.is_empty()).then(|| serde_json::to_string(r).expect("plain data")))
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &cols.id,
        &cols.queue,
        &cols.kind,
        &cols.priority,
        &cols.state,
        &cols.run_at,
        &cols.lease_expires_at,
        &cols.lease_worker,
        &cols.finished_at,
        &cols.workflow_id,
        &cols.node,
        &cols.parent_count,
        &cols.doc,
        &cols.constrained,
        &cols.concurrency_key,
        &resources,
        &cols.expires_at,
    ];
    let events = EventRows::of_tasks(shared, new);
    let notify = notify.map(|(channel, payload)| [channel, payload]);
    let sql = match &notify {
        Some([channel, payload]) => {
            params.push(channel);
            params.push(payload);
            format!("WITH {}, inserted AS ({} RETURNING 1) SELECT pg_notify($18, $19)", cte(20), insert_tasks!())
        }
        None => format!("WITH {}{}", cte(18), insert_tasks!()),
    };
    params.extend(events.params());
    execute(c, &sql, &params).await?;
    Ok(())
}

/// Writes changed tasks back in one statement. With `versions` (one per task, from
/// [`load_versioned`]), writes only rows no one changed since they were read, and fails with a
/// conflict that reruns the whole transaction if any was.
pub(crate) async fn update<'t>(
    tx: &Tx<'_>,
    shared: &Shared,
    changed: impl IntoIterator<Item = &'t Task>,
    versions: Option<&[i64]>,
) -> PgResult<()> {
    let changed: Vec<&Task> = changed.into_iter().collect();
    let c = Columns::of(changed.iter().copied());
    if c.id.is_empty() {
        return Ok(());
    }
    let (version_array, version_column, unchanged) = match versions {
        Some(_) => (", $11::int8[]", ", version", " AND tasks.xmin::text::int8 = u.version"),
        None => ("", "", ""),
    };
    // The events' parameters follow the tasks' (and the versions, if any).
    let events = EventRows::of_tasks(shared, changed.iter().copied());
    let append = match (events.is_empty(), versions) {
        (true, _) => String::new(),
        (false, None) => format!("WITH {}", cte(11)),
        (false, Some(_)) => format!("WITH {}", cte(12)),
    };
    let sql = format!(
        "{append}UPDATE tasks SET state = u.state, run_at = u.run_at, lease_expires_at = u.lx, lease_worker = u.lw, \
         finished_at = u.fin, workflow_id = u.wf, node = u.node, doc = u.doc, expires_at = u.ex \
         FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[], $7::uuid[], \
         $8::text[], $9::text[], $10::int8[]{version_array}) \
         AS u(id, state, run_at, lx, lw, fin, wf, node, doc, ex{version_column}) \
         WHERE tasks.id = u.id{unchanged}"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &c.id,
        &c.state,
        &c.run_at,
        &c.lease_expires_at,
        &c.lease_worker,
        &c.finished_at,
        &c.workflow_id,
        &c.node,
        &c.doc,
        &c.expires_at,
    ];
    if let Some(versions) = &versions {
        params.push(versions);
    }
    if !events.is_empty() {
        params.extend(events.params());
    }
    let written = execute(tx, &sql, &params).await?;
    if versions.is_some() && written as usize != c.id.len() {
        return Err(super::Fail::Changed);
    }
    Ok(())
}
