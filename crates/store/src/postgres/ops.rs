//! Task operations on PostgreSQL. Writes lock the rows they change, apply the core's transitions
//! and write the rows back with one statement; an operation that refuses does so before writing.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::GenericClient;
use taskwarden_core::events::NewEvent;
use taskwarden_core::limits::{Gate, QueueLimits};
use taskwarden_core::placement::{aged_past, fair_take, rank_by_aged_priority};
use taskwarden_core::protocol::{ItemStatus, LeaseStatus, QueueInfo, WorkerInfo};
use taskwarden_core::{Cancellation, LeaseToken, RunTiming, Task, TaskId, Timestamp};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{self, Tx, execute, load, lock, query, query_opt, uuid};
use super::{PgResult, Shared, Touched, scheduling, workflows};
use crate::StoreError;
use crate::admission::{self, Fetched, Hold};
use crate::list_query::{Arg, Dialect, ListQuery};
use crate::params::*;
use crate::queue_stats::{COUNTED, Count, assemble};

/// Writes tasks back after their transitions and notes the topics they touch; workflow tasks
/// that finished then move their workflows on (which sees them already written).
pub(crate) async fn save(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, tasks: &[Task]) -> PgResult<()> {
    rows::update(tx, shared, tasks, None).await?;
    after_write(tx, st, shared, tasks).await
}

async fn after_write(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, tasks: &[Task]) -> PgResult<()> {
    shared.churn.fetch_add(tasks.len() as u64, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        st.touch_for(task);
    }
    for task in tasks.iter().filter(|t| t.workflow_id.is_some() && t.state.is_terminal()) {
        workflows::on_finished(tx, st, shared, task).await?;
    }
    Ok(())
}

/// Tasks by id, read without locks, with their row versions.
async fn versioned(tx: &Tx<'_>, ids: &[TaskId]) -> PgResult<(HashMap<TaskId, Task>, HashMap<TaskId, i64>)> {
    let mut tasks = HashMap::with_capacity(ids.len());
    let mut versions = HashMap::with_capacity(ids.len());
    for (task, version) in rows::load_versioned(tx, ids).await? {
        versions.insert(task.id, version);
        tasks.insert(task.id, task);
    }
    Ok((tasks, versions))
}

/// Like [`save`], for tasks read by [`versioned`]: the write fails (and the transaction runs
/// again) if any of them changed meanwhile.
async fn save_unchanged(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    tasks: &[Task],
    versions: &HashMap<TaskId, i64>,
) -> PgResult<()> {
    let versions: Vec<i64> = tasks.iter().map(|t| versions[&t.id]).collect();
    rows::update(tx, shared, tasks, Some(&versions)).await?;
    after_write(tx, st, shared, tasks).await
}

/// Lets this transaction commit without waiting for its WAL to reach disk. Only for leases and
/// heartbeats: if the database crashes and forgets one, the task is simply leased again (execution
/// is at-least-once anyway, and the forgotten lease's report is refused by fencing). Submits and
/// completions always wait for the disk.
async fn relaxed_commit(tx: &Tx<'_>) -> PgResult<()> {
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
    Ok(())
}

pub(crate) async fn submit(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    p: &SubmitTasks,
) -> PgResult<Vec<Submitted>> {
    let window_start = p.now.saturating_sub(p.idempotency_window).as_micros();
    let now = p.now.as_micros();
    let mut out = Vec::with_capacity(p.tasks.len());
    let mut new: Vec<Task> = Vec::with_capacity(p.tasks.len());
    for spec in &p.tasks {
        let id = shared.next_id(p.now);
        if let Some(key) = &spec.idempotency_key {
            // Claim the key, or take it over if its window has passed. A concurrent submit of the
            // same key on another node waits here for this transaction, then sees the key taken.
            let claimed = query_opt(
                tx,
                "INSERT INTO idempotency_keys (key, task_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET task_id = EXCLUDED.task_id, created_at = EXCLUDED.created_at \
                 WHERE idempotency_keys.created_at < $4 RETURNING task_id",
                &[key, &uuid(id), &now, &window_start],
            )
            .await?;
            if claimed.is_none() {
                let row = query_opt(tx, "SELECT task_id FROM idempotency_keys WHERE key = $1", &[key]).await?;
                let existing =
                    rows::task_id(row.ok_or(StoreError::Internal("idempotency key vanished".into()))?.get(0));
                let earlier = match new.iter().find(|t| t.id == existing) {
                    Some(task) => Some(task.clone()),
                    None => load(tx, existing).await?,
                };
                if let Some(task) = earlier {
                    // Refused before commit: the whole submit is rolled back.
                    if let Some(message) = spec.conflicts_with(&task.queue, &task.kind, &task.payload) {
                        return Err(StoreError::Conflict(message).into());
                    }
                    out.push(Submitted { task, created: false });
                    continue;
                }
                // Its task was pruned by retention: the key is free again.
                execute(
                    tx,
                    "UPDATE idempotency_keys SET task_id = $2, created_at = $3 WHERE key = $1",
                    &[key, &uuid(id), &now],
                )
                .await?;
            }
        }
        let task = Task::new(id, spec.clone(), p.now);
        st.touch_for(&task);
        out.push(Submitted { task: task.clone(), created: true });
        new.push(task);
    }
    rows::insert(tx, shared, &new).await?;
    Ok(out)
}

/// A submit without idempotency keys, which reads nothing: the rows and their wake-up go out as
/// one statement, outside any transaction (so in one of its own), in one round trip. Returns the
/// topics it touched, for the caller to announce on this node.
pub(crate) async fn submit_plain(
    c: &impl GenericClient,
    shared: &Shared,
    p: &SubmitTasks,
) -> PgResult<(Vec<Submitted>, Touched)> {
    let mut st = Touched::default();
    let new: Vec<Task> = p.tasks.iter().map(|spec| Task::new(shared.next_id(p.now), spec.clone(), p.now)).collect();
    for task in &new {
        st.touch_for(task);
    }
    rows::insert_notifying(c, shared, &new, &st.payload()).await?;
    Ok((new.into_iter().map(|task| Submitted { task, created: true }).collect(), st))
}

pub(crate) async fn get(c: &impl GenericClient, id: TaskId) -> PgResult<Task> {
    load(c, id).await?.ok_or(StoreError::NotFound.into())
}

/// PostgreSQL's way of writing the list query. The task's document is text (so payloads keep
/// their bytes): terms read it as `json`, which parses about twice as fast as `jsonb` (it is
/// only checked, not converted), and compare the value found as `jsonb` (so `42 = 42.0`).
const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    has_tag: "jsonb_exists((doc::json -> 'tags')::jsonb, ?)",
    error_like: "doc::json ->> 'error' ILIKE ?",
    field: |_| "(doc::json #> ?::text[])::jsonb = ?::text::jsonb",
};

/// An argument as PostgreSQL takes it.
fn value(a: &Arg<'_>) -> Box<dyn ToSql + Sync + Send> {
    match a {
        Arg::Text(s) => Box::new((*s).to_owned()),
        Arg::Pattern(s) => Box::new(s.clone()),
        Arg::Id(id) => Box::new(uuid(*id)),
        Arg::Path(m) => Box::new(
            std::iter::once(m.document.as_str().to_owned()).chain(m.path.iter().cloned()).collect::<Vec<String>>(),
        ),
        Arg::Value(m) => Box::new(m.value.to_string()),
        Arg::Int(n) => Box::new(*n),
    }
}

pub(crate) async fn list(c: &impl GenericClient, p: &ListTasks) -> PgResult<TaskPage> {
    let q = ListQuery::new(p, &DIALECT);
    let args: Vec<_> = q.rows.args.iter().map(value).collect();
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let mut tasks = rows::tasks(&query(c, &format!("SELECT doc{}", q.rows.sql), &params).await?)?;
    for t in &mut tasks {
        t.history.clear();
    }
    let edge = match &q.edge {
        Some(edge) if tasks.len() < p.limit as usize => {
            let args: Vec<_> = edge.args.iter().map(value).collect();
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            query_opt(c, &format!("SELECT id{}", edge.sql), &params)
                .await?
                .map(|r| TaskId::from_bytes(*r.get::<_, Uuid>(0).as_bytes()))
        }
        _ => None,
    };
    Ok(q.page(tasks, edge))
}

pub(crate) async fn cancel(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &CancelTask) -> PgResult<Cancelled> {
    let mut task = lock(tx, p.id).await?;
    let effect = task.cancel(p.now)?;
    save(tx, st, shared, std::slice::from_ref(&task)).await?;
    if effect == Cancellation::Cancelled {
        st.touch(Topic::Finished);
    }
    Ok(Cancelled { task, effect })
}

pub(crate) async fn retry(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &RetryTask) -> PgResult<Task> {
    let mut task = lock(tx, p.id).await?;
    if task.workflow_id.is_some() {
        return Err(StoreError::Conflict("a workflow's tasks cannot be retried one by one".into()).into());
    }
    task.retry(p.now)?;
    save(tx, st, shared, std::slice::from_ref(&task)).await?;
    Ok(task)
}

/// Leases up to `limit` ready tasks: rows another node is leasing right now are skipped, not
/// waited for. Queues with limits, and tasks that ask something of their worker, go through the
/// limits gate under advisory locks that make the counts it reads global across nodes.
pub(crate) async fn fetch(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    p: &FetchTasks,
    now: Timestamp,
) -> PgResult<Fetched> {
    let mut queues = p.queues.clone();
    queues.sort();
    queues.dedup();
    if queues.is_empty() {
        return Ok(Fetched::default());
    }
    let limit = p.limit as usize;
    // Sent together: the connection pipelines them, one round trip for both.
    let ((), settings) = tokio::try_join!(relaxed_commit(tx), scheduling::settings(tx, &queues))?;
    let limits: BTreeMap<String, QueueLimits> =
        settings.iter().filter(|s| !s.limits.is_empty()).map(|s| (s.name.clone(), s.limits)).collect();
    // Fetches from limited queues take turns, in name order, wherever they run.
    for queue in limits.keys() {
        scheduling::lock(tx, shared, "queue", queue).await?;
    }
    let weight = |q: &str| settings.iter().find(|s| s.name == q).map_or(1, |s| s.weight);
    let mut window = limit;
    loop {
        let mut lists = Vec::with_capacity(queues.len());
        for queue in &queues {
            lists.push((queue.clone(), weight(queue), best_ready(tx, shared, queue, &p.worker_id, window, now).await?));
        }
        let full = lists.iter().any(|(_, _, l)| l.len() == window);
        if Gate::is_open_for(&limits, lists.iter().flat_map(|(_, _, l)| l)) {
            let mut tasks = match lists.len() {
                1 => lists.pop().expect("one list").2,
                // Each queue's best, shared out by the queues' weights. Rows locked but not taken
                // are free again when the transaction ends a moment later.
                _ => fair_take(lists, &mut shared.leased.lock().expect("leased lock"), limit),
            };
            start(tx, st, shared, &mut tasks, &p.worker_id, now).await?;
            return Ok(Fetched { tasks, hold: Hold::default() });
        }
        let all: Vec<&Task> = lists.iter().flat_map(|(_, _, l)| l).collect();
        let worker = match all.iter().any(|t| t.needs.constrains_worker()) {
            true => Some(scheduling::lock_worker_fit(tx, shared, &p.worker_id, &p.finished).await?),
            false => None,
        };
        let mut gate = Gate::new(limits.clone(), worker);
        scheduling::load_gate(tx, &mut gate, &all).await?;
        let order = fair_take(lists, &mut shared.leased.lock().expect("leased lock").clone(), usize::MAX);
        let mut taken = admission::admit(&mut gate, order, limit, now);
        if admission::widen(&gate, taken.len(), limit, window, full) {
            window = limit + admission::WIDER_WINDOW; // look further down for tasks that fit
            continue;
        }
        {
            let mut leased = shared.leased.lock().expect("leased lock");
            for t in &taken {
                *leased.entry(t.queue.clone()).or_insert(0) += 1;
            }
        }
        scheduling::save_buckets(tx, &gate).await?;
        start(tx, st, shared, &mut taken, &p.worker_id, now).await?;
        return Ok(Fetched { tasks: taken, hold: Hold::of(&gate) });
    }
}

/// Leases the chosen tasks to the worker and writes them back.
async fn start(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    tasks: &mut Vec<Task>,
    worker_id: &str,
    now: Timestamp,
) -> PgResult<()> {
    // One past its expires_at is dropped, not started (the sweep had not reached it yet).
    let expired = Task::take_expired(tasks, now);
    if !expired.is_empty() {
        save(tx, st, shared, &expired).await?;
    }
    for task in tasks.iter_mut() {
        task.start(worker_id, LeaseToken::from_random(shared.random()), now)?;
    }
    save(tx, st, shared, tasks).await?;
    for task in tasks.iter_mut() {
        task.history.clear();
    }
    Ok(())
}

/// A queue's best ready tasks (`$1` the queue, `$2` how many), locked.
/// Only kinds the worker (`$3`) has handlers for, when it said which.
pub(crate) const BEST: &str = "SELECT doc FROM tasks WHERE state = 'ready' AND queue = $1 \
    AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused) \
    AND kind = ANY(COALESCE((SELECT kinds FROM workers WHERE id = $3), ARRAY[kind])) \
    ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED";
/// A queue's ready tasks that have waited longest, for aging (of kinds the worker `$3` runs).
pub(crate) const OLDEST: &str = "SELECT id, priority, run_at FROM tasks WHERE state = 'ready' AND queue = $1 \
    AND kind = ANY(COALESCE((SELECT kinds FROM workers WHERE id = $3), ARRAY[kind])) \
    ORDER BY run_at, id LIMIT $2";

/// A queue's best `window` ready tasks, locked: by priority, and with aging also its oldest ready
/// tasks (one that waited long enough outranks newer tasks of higher priority). Paused queues
/// give none.
async fn best_ready(
    tx: &Tx<'_>,
    shared: &Shared,
    queue: &String,
    worker_id: &String,
    window: usize,
    now: Timestamp,
) -> PgResult<Vec<Task>> {
    let window = window as i64;
    let mut best = rows::tasks(&query(tx, BEST, &[queue, &window, worker_id]).await?)?;
    if shared.aging.is_some() && best.len() as i64 == window {
        // Read without locks; only the ones aged past the best are locked and loaded.
        let oldest: Vec<(TaskId, i32, Timestamp)> = query(tx, OLDEST, &[queue, &window, worker_id])
            .await?
            .iter()
            .map(|r| (rows::task_id(r.get(0)), r.get(1), Timestamp::from_micros(r.get(2))))
            .collect();
        let caught_up: Vec<Uuid> = aged_past(&best, &oldest, now, shared.aging).into_iter().map(uuid).collect();
        if !caught_up.is_empty() {
            let sql = "SELECT doc FROM tasks WHERE id = ANY($1) AND state = 'ready' FOR UPDATE SKIP LOCKED";
            best.extend(rows::tasks(&query(tx, sql, &[&caught_up]).await?)?);
            rank_by_aged_priority(&mut best, now, shared.aging);
            best.truncate(window as usize);
        }
    }
    Ok(best)
}

pub(crate) async fn heartbeat(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    p: &Heartbeat,
) -> PgResult<Vec<LeaseStatus>> {
    relaxed_commit(tx).await?;
    if let Some(worker) = &p.worker_id {
        execute(tx, "UPDATE workers SET last_seen_at = $2 WHERE id = $1", &[worker, &p.now.as_micros()]).await?;
    }
    let ids: Vec<TaskId> = p.leases.iter().map(|h| h.task_id).collect();
    let (mut found, versions) = versioned(tx, &ids).await?;
    let mut changed: Vec<TaskId> = Vec::new();
    let mut logs = Vec::new();
    let mut out = Vec::with_capacity(p.leases.len());
    for held in &p.leases {
        let Some(task) = found.get_mut(&held.task_id) else {
            out.push(LeaseStatus::not_found(held.task_id));
            continue;
        };
        let status = task.beat(p.worker_id.as_deref(), held, p.now);
        if status.status == ItemStatus::Ok {
            changed.push(task.id);
            if !held.logs.is_empty() {
                let attempt = task.lease.as_ref().map_or(task.attempts, |l| l.attempt);
                logs.push((task.id, attempt, held.logs.clone()));
            }
        }
        out.push(status);
    }
    // A task named twice is taken (and written) once.
    let changed: Vec<Task> = changed.iter().filter_map(|id| found.remove(id)).collect();
    save_unchanged(tx, st, shared, &changed, &versions).await?;
    super::task_logs::append(tx, logs, p.now).await?;
    Ok(out)
}

pub(crate) async fn report(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    p: &ReportOutcomes,
) -> PgResult<Vec<crate::Result<Task>>> {
    let ids: Vec<TaskId> = p.reports.iter().map(|r| r.task_id).collect();
    let (mut found, versions) = versioned(tx, &ids).await?;
    let mut changed: Vec<TaskId> = Vec::new();
    let mut logs = Vec::new();
    let mut out = Vec::with_capacity(p.reports.len());
    for r in &p.reports {
        let Some(task) = found.get_mut(&r.task_id) else {
            out.push(Err(StoreError::NotFound));
            continue;
        };
        let attempt = task
            .check_holder(p.worker_id.as_deref())
            .and_then(|()| task.apply_report(r.lease, r.outcome.clone(), RunTiming::of(r), p.now, shared.random()));
        match attempt {
            // The transition recorded the attempt in the task's history.
            Ok(attempt) => {
                changed.push(task.id);
                if !r.logs.is_empty() {
                    logs.push((task.id, attempt.number, r.logs.clone()));
                }
                let mut reply = task.clone();
                reply.history.clear();
                out.push(Ok(reply));
            }
            // Any refusal here means the caller's lease is not current: the task moved on.
            Err(_) => out.push(Err(StoreError::LeaseLost)),
        }
    }
    // A task named twice is taken (and written) once.
    let changed: Vec<Task> = changed.iter().filter_map(|id| found.remove(id)).collect();
    save_unchanged(tx, st, shared, &changed, &versions).await?;
    super::task_logs::append(tx, logs, p.now).await?;
    Ok(out)
}

pub(crate) async fn expire_leases(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &ExpireLeases) -> PgResult<usize> {
    let due = query(
        tx,
        "SELECT doc FROM tasks WHERE state = 'running' AND lease_expires_at <= $1 \
         ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&p.now.as_micros(), &i64::from(p.limit)],
    )
    .await?;
    let mut expired = Vec::new();
    for mut task in rows::tasks(&due)? {
        if task.expire(p.now, shared.random()).is_ok() {
            expired.push(task);
        }
    }
    save(tx, st, shared, &expired).await?;
    Ok(expired.len())
}

pub(crate) async fn expire_unstarted(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    p: &ExpireLeases,
) -> PgResult<usize> {
    let due = query(
        tx,
        "SELECT doc FROM tasks WHERE expires_at <= $1 AND expires_at IS NOT NULL \
         AND state IN ('scheduled', 'ready') ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&p.now.as_micros(), &i64::from(p.limit)],
    )
    .await?;
    let mut expired = Vec::new();
    for mut task in rows::tasks(&due)? {
        if task.expire_unstarted(p.now).is_ok() {
            expired.push(task);
        }
    }
    save(tx, st, shared, &expired).await?;
    Ok(expired.len())
}

pub(crate) async fn promote_due(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &PromoteDue) -> PgResult<Promoted> {
    let due = query(
        tx,
        "SELECT doc FROM tasks WHERE state = 'scheduled' AND run_at <= $1 \
         ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&p.now.as_micros(), &i64::from(p.limit)],
    )
    .await?;
    let mut promoted = Vec::new();
    for mut task in rows::tasks(&due)? {
        if task.promote(p.now).is_ok() {
            promoted.push(task);
        }
    }
    save(tx, st, shared, &promoted).await?;
    let next = query_opt(tx, "SELECT MIN(run_at) FROM tasks WHERE state = 'scheduled'", &[]).await?;
    let next_due: Option<i64> = next.and_then(|r| r.get(0));
    Ok(Promoted { promoted: promoted.len(), next_due: next_due.map(Timestamp::from_micros) })
}

pub(crate) async fn prune_expired(tx: &Tx<'_>, p: &PruneExpired) -> PgResult<usize> {
    let n = execute(
        tx,
        "DELETE FROM idempotency_keys WHERE key IN \
         (SELECT key FROM idempotency_keys WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&p.keys_before.as_micros(), &i64::from(p.limit)],
    )
    .await?;
    // Buckets untouched for a day are full again (no rate's period is longer), and a missing
    // bucket is a full one: they go.
    let stale = p.keys_before.saturating_sub(std::time::Duration::from_secs(86_400)).as_micros();
    let buckets = execute(tx, "DELETE FROM rate_buckets WHERE at < $1", &[&stale]).await?;
    // Workers lost long ago that hold nothing are forgotten, unless a token registered them: its
    // worker may only fetch while registered, and one back from a partition must still be.
    let workers = execute(
        tx,
        "DELETE FROM workers w WHERE w.last_seen_at < $1 AND w.owner IS NULL AND NOT EXISTS \
         (SELECT 1 FROM tasks t WHERE t.state = 'running' AND t.lease_worker = w.id)",
        &[&p.workers_before.as_micros()],
    )
    .await?;
    Ok((n + buckets + workers) as usize)
}

/// Forgets one lost worker that holds nothing (see `Store::remove_worker`).
pub(crate) async fn remove_worker(tx: &Tx<'_>, p: &RemoveWorker) -> PgResult<()> {
    let removed = execute(
        tx,
        "DELETE FROM workers w WHERE w.id = $1 AND w.last_seen_at < $2 AND NOT EXISTS \
         (SELECT 1 FROM tasks t WHERE t.state = 'running' AND t.lease_worker = w.id)",
        &[&p.id, &p.lost_before.as_micros()],
    )
    .await?;
    if removed > 0 {
        return Ok(());
    }
    match query_opt(tx, "SELECT 1 FROM workers WHERE id = $1", &[&p.id]).await? {
        Some(_) => Err(StoreError::Conflict(crate::NOT_REMOVABLE.into()).into()),
        None => Err(StoreError::NotFound.into()),
    }
}

pub(crate) async fn prune_finished(tx: &Tx<'_>, p: &PruneFinished) -> PgResult<usize> {
    let before = p.finished_before.as_micros();
    let plain = query(
        tx,
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE finished_at < $1 AND workflow_id IS NULL \
         AND state IN ('succeeded', 'failed', 'cancelled', 'expired') ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
        &[&before, &i64::from(p.limit)],
    )
    .await?;
    let ids: Vec<Uuid> = plain.iter().map(|r| r.get(0)).collect();
    execute(tx, "DELETE FROM idempotency_keys WHERE task_id = ANY($1)", &[&ids]).await?;
    execute(tx, "DELETE FROM task_logs WHERE task_id = ANY($1)", &[&ids]).await?;
    let mut deleted = ids.len();
    // Whole workflows, once decided and with no task still running.
    while deleted < p.limit as usize {
        let wf = query_opt(
            tx,
            "SELECT w.id FROM workflows w WHERE w.finished_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM tasks t WHERE t.workflow_id = w.id AND t.state IN ('scheduled', 'ready', 'running')) \
             ORDER BY w.finished_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&before],
        )
        .await?;
        let Some(wf) = wf else { break };
        let wf: Uuid = wf.get(0);
        let gone = query(tx, "DELETE FROM tasks WHERE workflow_id = $1 RETURNING id", &[&wf]).await?;
        let ids: Vec<Uuid> = gone.iter().map(|r| r.get(0)).collect();
        execute(tx, "DELETE FROM task_edges WHERE child_id = ANY($1) OR parent_id = ANY($1)", &[&ids]).await?;
        execute(tx, "DELETE FROM fanouts WHERE join_id = ANY($1)", &[&ids]).await?;
        execute(tx, "DELETE FROM idempotency_keys WHERE task_id = ANY($1)", &[&ids]).await?;
        execute(tx, "DELETE FROM task_logs WHERE task_id = ANY($1)", &[&ids]).await?;
        execute(tx, "DELETE FROM workflows WHERE id = $1", &[&wf]).await?;
        deleted += ids.len();
    }
    Ok(deleted)
}

pub(crate) async fn acquire_lease(tx: &Tx<'_>, p: &AcquireLease) -> PgResult<LeaseHolder> {
    let until = p.now.saturating_add(p.ttl).as_micros();
    execute(
        tx,
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
         WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= $4",
        &[&p.name, &p.holder, &until, &p.now.as_micros()],
    )
    .await?;
    let row = query_opt(tx, "SELECT holder, expires_at FROM leases WHERE name = $1", &[&p.name]).await?;
    let row = row.ok_or(StoreError::Internal("the lease row vanished".into()))?;
    Ok(LeaseHolder { holder: row.get(0), expires_at: Timestamp::from_micros(row.get(1)) })
}

pub(crate) async fn register_worker(tx: &Tx<'_>, shared: &Shared, p: &RegisterWorker) -> PgResult<WorkerInfo> {
    let id = format!("w-{:016x}", shared.random::<u64>());
    let queues = serde_json::to_string(&p.queues).expect("strings serialize");
    let capacity = serde_json::to_string(&p.capacity).expect("plain data serializes");
    let labels = serde_json::to_string(&p.labels).expect("plain data serializes");
    execute(
        tx,
        "INSERT INTO workers (id, name, queues, concurrency, registered_at, last_seen_at, capacity, labels, owner, \
         kinds) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
        &[
            &id,
            &p.name,
            &queues,
            &(p.concurrency as i32),
            &p.now.as_micros(),
            &capacity,
            &labels,
            &p.owner,
            &(!p.kinds.is_empty()).then_some(&p.kinds),
        ],
    )
    .await?;
    super::events::append(tx, shared, &[NewEvent::worker_joined(&id, &p.queues, p.now)]).await?;
    for (kind, schema) in &p.schemas {
        execute(
            tx,
            "INSERT INTO kind_schemas (kind, schema, registered_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kind) DO UPDATE SET schema = excluded.schema, registered_at = excluded.registered_at",
            &[kind, schema, &p.now.as_micros()],
        )
        .await?;
    }
    Ok(WorkerInfo {
        status: Default::default(),
        id,
        name: p.name.clone(),
        queues: p.queues.clone(),
        concurrency: p.concurrency,
        capacity: p.capacity.clone(),
        labels: p.labels.clone(),
        kinds: p.kinds.clone(),
        registered_at: p.now,
        last_seen_at: p.now,
        running: 0,
    })
}

pub(crate) async fn workers(c: &impl GenericClient) -> PgResult<Vec<WorkerInfo>> {
    let found = query(
        c,
        "SELECT w.id, w.name, w.queues, w.concurrency, w.registered_at, w.last_seen_at, COALESCE(r.n, 0), \
         w.capacity, w.labels, w.kinds \
         FROM workers w LEFT JOIN (SELECT lease_worker, COUNT(*) AS n FROM tasks WHERE state = 'running' \
         GROUP BY lease_worker) r ON r.lease_worker = w.id ORDER BY w.last_seen_at DESC LIMIT 1000",
        &[],
    )
    .await?;
    Ok(found
        .iter()
        .map(|r| WorkerInfo {
            status: Default::default(),
            id: r.get(0),
            name: r.get(1),
            queues: serde_json::from_str(r.get(2)).unwrap_or_default(),
            concurrency: r.get::<_, i32>(3) as u32,
            registered_at: Timestamp::from_micros(r.get(4)),
            last_seen_at: Timestamp::from_micros(r.get(5)),
            running: r.get::<_, i64>(6) as u32,
            capacity: serde_json::from_str(r.get(7)).unwrap_or_default(),
            labels: serde_json::from_str(r.get(8)).unwrap_or_default(),
            kinds: r.get::<_, Option<Vec<String>>>(9).unwrap_or_default(),
        })
        .collect())
}

pub(crate) async fn update_queue(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &UpdateQueue) -> PgResult<()> {
    let limits = p.limits.map(|l| serde_json::to_string(&l).expect("plain data serializes"));
    execute(
        tx,
        "INSERT INTO queues (name, paused, weight, limits, updated_at) \
         VALUES ($1, COALESCE($2, false), COALESCE($3, 1), COALESCE($5, '{}'), $4) \
         ON CONFLICT (name) DO UPDATE SET paused = COALESCE($2, queues.paused), \
         weight = COALESCE($3, queues.weight), limits = COALESCE($5, queues.limits), updated_at = $4",
        &[&p.queue, &p.paused, &p.weight.map(|w| w as i32), &p.now.as_micros(), &limits],
    )
    .await?;
    if let Some(paused) = p.paused {
        super::events::append(tx, shared, &[NewEvent::queue(&p.queue, paused, p.now)]).await?;
    }
    if p.paused == Some(false) || limits.is_some() {
        st.touch(Topic::Ready); // its tasks may be leased again: wake the parked fetchers
    }
    Ok(())
}

pub(crate) async fn remove_queue(tx: &Tx<'_>, name: &str) -> PgResult<()> {
    match execute(tx, "DELETE FROM queues WHERE name = $1", &[&name]).await? {
        0 => Err(StoreError::NotFound.into()),
        _ => Ok(()),
    }
}

/// The queues and their counts; with `recent`, also the queues a task finished in lately, and
/// their last minute's successes (see `Store::queue_depths`).
pub(crate) async fn queues(c: &impl GenericClient, now: Timestamp, recent: bool) -> PgResult<Vec<QueueInfo>> {
    let mut counts = Vec::new();
    for what in COUNTED {
        // The state as a literal, so its partial index serves the count.
        let sql = format!("SELECT queue, COUNT(*), MIN(run_at) FROM tasks WHERE state = '{what}' GROUP BY queue");
        for r in query(c, &sql, &[]).await? {
            counts.push(Count {
                queue: r.get(0),
                what,
                n: r.get::<_, i64>(1) as u64,
                earliest: r.get::<_, Option<i64>>(2).map(Timestamp::from_micros),
            });
        }
    }
    if !recent {
        return Ok(assemble(counts, scheduling::settings(c, &[]).await?, now));
    }
    let (minute_ago, active_since) = crate::queue_stats::windows(now);
    // Every queue a task finished in lately (listed though idle now), with its last minute's
    // successes.
    let sql = "SELECT queue, COUNT(*) FILTER (WHERE finished_at >= $1 AND state = 'succeeded') \
               FROM tasks WHERE finished_at >= $2 GROUP BY queue";
    for r in query(c, sql, &[&minute_ago, &active_since]).await? {
        counts.push(Count { queue: r.get(0), what: "succeeded", n: r.get::<_, i64>(1) as u64, earliest: None });
    }
    Ok(assemble(counts, scheduling::settings(c, &[]).await?, now))
}
