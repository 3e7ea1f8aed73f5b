//! The write operations. Each runs on the writer thread inside the group transaction, loads the
//! tasks it touches, applies the core's transition and writes them back. An operation that refuses
//! (not found, stale lease, invalid transition) does so before it writes anything.

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use taskwarden_core::events::NewEvent;
use taskwarden_core::placement::{aged_past, fair_take, rank_by_aged_priority};
use taskwarden_core::protocol::{ItemStatus, LeaseStatus, WorkerInfo};
use taskwarden_core::{Attempt, Cancellation, LeaseToken, NewTask, RunTiming, Task, TaskId, Timestamp};

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use taskwarden_core::limits::{Gate, QueueLimits};

use super::rows::{TASK_COLUMNS, insert_attempt, insert_task, load_task, save_task, task_from_row};
use super::writer::WriterState;
use super::{internal, scheduling};
use crate::admission::{self, Fetched, Hold};
use crate::params::*;
use crate::{NOT_REMOVABLE, Result, StoreError};

/// Notes which wake-up topics a task's new state concerns.
pub(crate) fn touch_for(state: &mut WriterState, task: &Task) {
    if let Some(topic) = Topic::of(task.state) {
        state.touch(topic);
    }
}

pub(crate) fn load(conn: &Connection, id: TaskId) -> Result<Task> {
    load_task(conn, id).map_err(internal)?.ok_or(StoreError::NotFound)
}

/// Writes a task back after a transition; a workflow task that just finished moves its
/// workflow on.
/// Writes back a task's changed columns, and what it holds while running (see `ledger`). Every
/// task write goes through here.
pub(crate) fn write_task(conn: &Connection, st: &mut WriterState, task: &Task) -> Result<()> {
    let events = st.events.task(conn, task).map_err(internal)?;
    save_task(conn, task, events.as_deref()).map_err(internal)?;
    st.ledger.saved(task);
    Ok(())
}

/// Inserts a new task with its `task.submitted` event. Every task insert goes through here.
pub(crate) fn insert_new(conn: &Connection, st: &mut WriterState, task: &Task) -> Result<()> {
    let events = st.events.task(conn, task).map_err(internal)?;
    insert_task(conn, task, events.as_deref()).map_err(internal)
}

pub(crate) fn save(conn: &Connection, st: &mut WriterState, task: &Task, attempt: Option<&Attempt>) -> Result<()> {
    write_task(conn, st, task)?;
    if let Some(a) = attempt {
        insert_attempt(conn, task.id, a).map_err(internal)?;
    }
    touch_for(st, task);
    if task.workflow_id.is_some() && task.state.is_terminal() {
        super::workflows::on_finished(conn, st, task)?;
    }
    Ok(())
}

pub(crate) fn submit(conn: &Connection, st: &mut WriterState, p: SubmitTasks) -> Result<Vec<Submitted>> {
    st.observe(p.now);
    let window_start = p.now.saturating_sub(p.idempotency_window).as_micros();
    check_keys(conn, &p.tasks, window_start)?;
    let mut out = Vec::with_capacity(p.tasks.len());
    for spec in p.tasks {
        if let Some(key) = &spec.idempotency_key {
            let mut find = conn
                .prepare_cached("SELECT task_id FROM idempotency_keys WHERE key = ?1 AND created_at >= ?2")
                .map_err(internal)?;
            let existing: Option<[u8; 16]> =
                find.query_row(params![key, window_start], |r| r.get(0)).optional().map_err(internal)?;
            if let Some(id) = existing
                && let Some(task) = load_task(conn, TaskId::from_bytes(id)).map_err(internal)?
            {
                out.push(Submitted { task, created: false });
                continue;
            }
        }
        let id = st.ids.next(p.now, st.rng.random());
        let task = Task::new(id, spec, p.now);
        insert_new(conn, st, &task)?;
        if let Some(key) = &task.idempotency_key {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO idempotency_keys (key, task_id, created_at) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![key, task.id.as_bytes(), p.now.as_micros()]))
            .map_err(internal)?;
        }
        touch_for(st, &task);
        out.push(Submitted { task, created: true });
    }
    Ok(out)
}

/// Refuses, before anything is written, a submit that re-uses an idempotency key for a different
/// task (one stored earlier, or one earlier in the same batch).
fn check_keys(conn: &Connection, specs: &[NewTask], window_start: i64) -> Result<()> {
    let mut seen: HashMap<&str, &NewTask> = HashMap::new();
    for spec in specs {
        let Some(key) = spec.idempotency_key.as_deref() else { continue };
        let conflict = match seen.get(key) {
            Some(first) => spec.conflicts_with(&first.queue, &first.kind, &first.payload),
            None => {
                seen.insert(key, spec);
                let existing: Option<[u8; 16]> = conn
                    .prepare_cached("SELECT task_id FROM idempotency_keys WHERE key = ?1 AND created_at >= ?2")
                    .and_then(|mut s| s.query_row(params![key, window_start], |r| r.get(0)).optional())
                    .map_err(internal)?;
                match existing {
                    Some(id) => load_task(conn, TaskId::from_bytes(id))
                        .map_err(internal)?
                        .and_then(|t| spec.conflicts_with(&t.queue, &t.kind, &t.payload)),
                    None => None,
                }
            }
        };
        if let Some(message) = conflict {
            return Err(StoreError::Conflict(message));
        }
    }
    Ok(())
}

pub(crate) fn cancel(conn: &Connection, st: &mut WriterState, p: CancelTask) -> Result<Cancelled> {
    st.observe(p.now);
    let mut task = load(conn, p.id)?;
    let effect = task.cancel(p.now)?;
    save(conn, st, &task, None)?;
    if effect == Cancellation::Cancelled {
        st.touch(Topic::Finished);
    }
    Ok(Cancelled { task, effect })
}

pub(crate) fn retry(conn: &Connection, st: &mut WriterState, p: RetryTask) -> Result<Task> {
    st.observe(p.now);
    let mut task = load(conn, p.id)?;
    if task.workflow_id.is_some() {
        return Err(StoreError::Conflict("a workflow's tasks cannot be retried one by one".into()));
    }
    task.retry(p.now)?;
    save(conn, st, &task, None)?;
    Ok(task)
}

pub(crate) fn fetch(conn: &Connection, st: &mut WriterState, p: &FetchTasks) -> Result<Fetched> {
    let limit = p.limit as usize;
    // Each queue once: a queue named twice would lease the same task twice. Paused ones not at all.
    let settings = queue_settings(conn)?;
    let setting = |q: &str| settings.iter().find(|s| s.name == q);
    let mut queues: Vec<&String> = p.queues.iter().filter(|q| !setting(q).is_some_and(|s| s.paused)).collect();
    queues.sort();
    queues.dedup();
    let limits: BTreeMap<String, QueueLimits> = queues
        .iter()
        .filter_map(|q| setting(q).filter(|s| !s.limits.is_empty()).map(|s| (s.name.clone(), s.limits)))
        .collect();
    // The kinds it has handlers for (a JSON array), if it said; read once, not per candidate row.
    let kinds: Option<String> = conn
        .prepare_cached("SELECT kinds FROM workers WHERE id = ?1")
        .and_then(|mut s| s.query_row([&p.worker_id], |r| r.get(0)).optional())
        .map_err(internal)?
        .flatten();
    let mut window = limit;
    loop {
        let mut lists: Vec<(String, u32, Vec<Task>)> = Vec::with_capacity(queues.len());
        for queue in &queues {
            let best = best_ready(conn, st, queue, kinds.as_deref(), window, p.now)?;
            lists.push(((*queue).clone(), setting(queue).map_or(1, |s| s.weight), best));
        }
        let full = lists.iter().any(|(_, _, l)| l.len() == window);
        let (tasks, hold) = if Gate::is_open_for(&limits, lists.iter().flat_map(|(_, _, l)| l)) {
            // One queue: its best tasks. Several: each one's best, shared out by the queues' weights.
            let tasks = match lists.len() {
                1 => lists.pop().expect("one list").2,
                _ => fair_take(lists, &mut st.leased, limit),
            };
            (tasks, Hold::default())
        } else {
            let all: Vec<&Task> = lists.iter().flat_map(|(_, _, l)| l).collect();
            let worker = match all.iter().any(|t| t.needs.constrains_worker()) {
                true => Some(scheduling::worker_fit(conn, &st.ledger, &p.worker_id, &p.finished)?),
                false => None,
            };
            let mut gate = Gate::new(limits.clone(), worker);
            scheduling::load_gate(conn, &st.ledger, &mut st.buckets, &mut gate, &all)?;
            // Placement order: each queue best first, interleaved by weight.
            let order = fair_take(lists, &mut st.leased.clone(), usize::MAX);
            let taken = admission::admit(&mut gate, order, limit, p.now);
            if admission::widen(&gate, taken.len(), limit, window, full) {
                window = limit + admission::WIDER_WINDOW; // look further down for tasks that fit
                continue;
            }
            for t in &taken {
                *st.leased.entry(t.queue.clone()).or_insert(0) += 1;
            }
            scheduling::save_buckets(conn, &mut st.buckets, &gate)?;
            (taken, Hold::of(&gate))
        };
        // One past its expires_at is dropped, not started (the sweep had not reached it yet).
        let mut tasks = tasks;
        for task in Task::take_expired(&mut tasks, p.now) {
            save(conn, st, &task, None)?;
        }
        for task in &mut tasks {
            task.start(&p.worker_id, LeaseToken::from_random(st.rng.random()), p.now)?;
            write_task(conn, st, task)?;
        }
        return Ok(Fetched { tasks, hold });
    }
}

/// Only kinds the worker has handlers for (`?3`, a JSON array), when it said which (NULL: any).
const RUNS_KIND: &str = "(?3 IS NULL OR kind IN (SELECT value FROM json_each(?3)))";

/// A queue's best ready tasks (`?1` the queue, `?2` how many, `?3` as in [`RUNS_KIND`]).
/// Made once: every fetch runs it.
static BEST_READY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_ready WHERE state = 'ready' AND queue = ?1 \
         AND {RUNS_KIND} ORDER BY priority DESC, id LIMIT ?2"
    )
});

/// A queue's oldest ready tasks, for aging, by the index kept in that order: left to choose,
/// SQLite may walk `tasks_by_queue` instead, stepping over every finished task of the queue on
/// each fetch (it did with `run_at` added to `tasks_ready_fifo`, a change tried for the count of
/// ready tasks: the 512-slot drain at half its speed).
static OLDEST_READY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, priority, run_at FROM tasks INDEXED BY tasks_ready_fifo WHERE state = 'ready' \
         AND queue = ?1 AND {RUNS_KIND} ORDER BY id LIMIT ?2"
    )
});

/// A queue's best `window` ready tasks: by priority, and with aging also its oldest ready tasks
/// (one that waited long enough outranks newer tasks of higher priority).
fn best_ready(
    conn: &Connection,
    st: &WriterState,
    queue: &str,
    kinds: Option<&str>,
    window: usize,
    now: Timestamp,
) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(&BEST_READY).map_err(internal)?;
    let rows = stmt.query_map(params![queue, window as i64, kinds], task_from_row).map_err(internal)?;
    let mut best = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)?;
    if st.aging.is_some() && best.len() == window {
        let mut oldest = conn.prepare_cached(&OLDEST_READY).map_err(internal)?;
        let rows = oldest
            .query_map(params![queue, window as i64, kinds], |r| {
                Ok((TaskId::from_bytes(r.get(0)?), r.get(1)?, Timestamp::from_micros(r.get(2)?)))
            })
            .map_err(internal)?;
        let oldest = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)?;
        let caught_up = aged_past(&best, &oldest, now, st.aging);
        if !caught_up.is_empty() {
            for id in caught_up {
                best.push(load(conn, id)?);
            }
            rank_by_aged_priority(&mut best, now, st.aging);
            best.truncate(window);
        }
    }
    Ok(best)
}

pub(crate) fn heartbeat(conn: &Connection, st: &mut WriterState, p: Heartbeat) -> Result<Vec<LeaseStatus>> {
    st.observe(p.now);
    if let Some(worker) = &p.worker_id {
        conn.prepare_cached("UPDATE workers SET last_seen_at = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![worker, p.now.as_micros()]))
            .map_err(internal)?;
    }
    let mut out = Vec::with_capacity(p.leases.len());
    for mut held in p.leases {
        let Some(mut task) = load_task(conn, held.task_id).map_err(internal)? else {
            out.push(LeaseStatus::not_found(held.task_id));
            continue;
        };
        let status = task.beat(p.worker_id.as_deref(), &held, p.now);
        if status.status == ItemStatus::Ok {
            save(conn, st, &task, None)?;
            let attempt = task.lease.as_ref().map_or(task.attempts, |l| l.attempt);
            super::task_logs::append(conn, task.id, attempt, std::mem::take(&mut held.logs), p.now)?;
        }
        out.push(status);
    }
    Ok(out)
}

pub(crate) fn report(conn: &Connection, st: &mut WriterState, p: ReportOutcomes) -> Result<Vec<Result<Task>>> {
    st.observe(p.now);
    let mut out = Vec::with_capacity(p.reports.len());
    for mut r in p.reports {
        let Some(mut task) = load_task(conn, r.task_id).map_err(internal)? else {
            out.push(Err(StoreError::NotFound));
            continue;
        };
        let timing = RunTiming::of(&r);
        let logs = std::mem::take(&mut r.logs);
        let attempt = task
            .check_holder(p.worker_id.as_deref())
            .and_then(|()| task.apply_report(r.lease, r.outcome, timing, p.now, st.rng.random()));
        match attempt {
            Ok(attempt) => {
                save(conn, st, &task, Some(&attempt))?;
                super::task_logs::append(conn, task.id, attempt.number, logs, p.now)?;
                out.push(Ok(task));
            }
            // Any refusal here means the caller's lease is not current: the task moved on.
            Err(_) => out.push(Err(StoreError::LeaseLost)),
        }
    }
    Ok(out)
}

/// The ids a "due by `now`" query (`?1` = now, `?2` = limit) selects.
fn due_ids(conn: &Connection, sql: &str, now: Timestamp, limit: u32) -> Result<Vec<TaskId>> {
    let mut stmt = conn.prepare_cached(sql).map_err(internal)?;
    let ids = stmt.query_map(params![now.as_micros(), limit], |r| r.get::<_, [u8; 16]>(0)).map_err(internal)?;
    ids.map(|id| id.map(TaskId::from_bytes).map_err(internal)).collect()
}

pub(crate) fn expire_leases(conn: &Connection, st: &mut WriterState, p: ExpireLeases) -> Result<usize> {
    st.observe(p.now);
    let sql = "SELECT id FROM tasks WHERE state = 'running' AND lease_expires_at <= ?1 LIMIT ?2";
    let mut expired = 0;
    for id in due_ids(conn, sql, p.now, p.limit)? {
        let mut task = load(conn, id)?;
        let random: f64 = st.rng.random();
        if let Ok(attempt) = task.expire(p.now, random) {
            save(conn, st, &task, Some(&attempt))?;
            expired += 1;
        }
    }
    Ok(expired)
}

pub(crate) fn expire_unstarted(conn: &Connection, st: &mut WriterState, p: ExpireLeases) -> Result<usize> {
    st.observe(p.now);
    let sql = "SELECT id FROM tasks WHERE expires_at <= ?1 AND expires_at IS NOT NULL \
               AND state IN ('scheduled', 'ready') ORDER BY expires_at LIMIT ?2";
    let mut expired = 0;
    for id in due_ids(conn, sql, p.now, p.limit)? {
        let mut task = load(conn, id)?;
        if task.expire_unstarted(p.now).is_ok() {
            save(conn, st, &task, None)?;
            expired += 1;
        }
    }
    Ok(expired)
}

pub(crate) fn promote_due(conn: &Connection, st: &mut WriterState, p: PromoteDue) -> Result<Promoted> {
    st.observe(p.now);
    let sql = "SELECT id FROM tasks WHERE state = 'scheduled' AND run_at <= ?1 ORDER BY run_at LIMIT ?2";
    let mut promoted = 0;
    for id in due_ids(conn, sql, p.now, p.limit)? {
        let mut task = load(conn, id)?;
        if task.promote(p.now).is_ok() {
            save(conn, st, &task, None)?;
            promoted += 1;
        }
    }
    let next_due: Option<i64> = conn
        .query_row("SELECT MIN(run_at) FROM tasks WHERE state = 'scheduled'", [], |r| r.get(0))
        .map_err(internal)?;
    Ok(Promoted { promoted, next_due: next_due.map(Timestamp::from_micros) })
}

pub(crate) fn register_worker(conn: &Connection, st: &mut WriterState, p: RegisterWorker) -> Result<WorkerInfo> {
    let id = format!("w-{:016x}", st.rng.random::<u64>());
    let queues = serde_json::to_string(&p.queues).expect("strings serialize");
    conn.execute(
        "INSERT INTO workers (id, name, queues, concurrency, registered_at, last_seen_at, capacity, labels, owner, kinds) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            p.name,
            queues,
            p.concurrency,
            p.now.as_micros(),
            serde_json::to_string(&p.capacity).expect("plain data serializes"),
            serde_json::to_string(&p.labels).expect("plain data serializes"),
            p.owner,
            (!p.kinds.is_empty()).then(|| serde_json::to_string(&p.kinds).expect("strings serialize")),
        ],
    )
    .map_err(internal)?;
    st.events.push(conn, &NewEvent::worker_joined(&id, &p.queues, p.now)).map_err(internal)?;
    for (kind, schema) in &p.schemas {
        conn.prepare_cached(
            "INSERT INTO kind_schemas (kind, schema, registered_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (kind) DO UPDATE SET schema = excluded.schema, registered_at = excluded.registered_at",
        )
        .and_then(|mut s| s.execute(params![kind, schema, p.now.as_micros()]))
        .map_err(internal)?;
    }
    Ok(WorkerInfo {
        status: Default::default(),
        id,
        name: p.name,
        queues: p.queues,
        concurrency: p.concurrency,
        capacity: p.capacity,
        labels: p.labels,
        kinds: p.kinds,
        registered_at: p.now,
        last_seen_at: p.now,
        running: 0,
    })
}

pub(crate) fn prune_expired(conn: &Connection, st: &mut WriterState, p: PruneExpired) -> Result<usize> {
    st.buckets.clear(); // some may go below
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE key IN \
         (SELECT key FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![p.keys_before.as_micros(), p.limit]))
    .map_err(internal)
    .and_then(|keys| Ok(keys + prune_buckets(conn, p.keys_before)? + prune_workers(conn, p.workers_before)?))
}

/// Forgets one lost worker that holds nothing (see `Store::remove_worker`).
pub(crate) fn remove_worker(conn: &Connection, p: RemoveWorker) -> Result<()> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM workers WHERE id = ?1 AND last_seen_at < ?2 AND NOT EXISTS \
             (SELECT 1 FROM tasks t WHERE t.state = 'running' AND t.lease_worker = workers.id)",
        )
        .and_then(|mut s| s.execute(params![p.id, p.lost_before.as_micros()]))
        .map_err(internal)?;
    if removed > 0 {
        return Ok(());
    }
    let known = conn
        .prepare_cached("SELECT 1 FROM workers WHERE id = ?1")
        .and_then(|mut s| s.query_row([&p.id], |_| Ok(())).optional())
        .map_err(internal)?;
    match known {
        Some(()) => Err(StoreError::Conflict(NOT_REMOVABLE.into())),
        None => Err(StoreError::NotFound),
    }
}

/// Forgets workers lost long ago that hold nothing, unless a token registered them: its worker
/// may only fetch while registered, and one that comes back after a partition must still be.
fn prune_workers(conn: &Connection, before: Timestamp) -> Result<usize> {
    conn.prepare_cached(
        "DELETE FROM workers WHERE last_seen_at < ?1 AND owner IS NULL AND NOT EXISTS \
         (SELECT 1 FROM tasks t WHERE t.state = 'running' AND t.lease_worker = workers.id)",
    )
    .and_then(|mut s| s.execute([before.as_micros()]))
    .map_err(internal)
}

/// Buckets untouched for a day are full again (no rate's period is longer), and a missing bucket
/// is a full one: they go.
fn prune_buckets(conn: &Connection, before: Timestamp) -> Result<usize> {
    let stale = before.saturating_sub(std::time::Duration::from_secs(86_400)).as_micros();
    conn.prepare_cached("DELETE FROM rate_buckets WHERE at < ?1").and_then(|mut s| s.execute([stale])).map_err(internal)
}

/// Deletes tasks (with their attempts, logs, keys and edges) by id. Their rows may carry
/// events not yet in a page: the commit writes those into one.
fn delete_tasks(conn: &Connection, st: &mut WriterState, ids: &[[u8; 16]]) -> Result<()> {
    if !ids.is_empty() {
        st.events.page_at_commit();
    }
    for sql in [
        "DELETE FROM attempts WHERE task_id = ?1",
        "DELETE FROM task_logs WHERE task_id = ?1",
        "DELETE FROM idempotency_keys WHERE task_id = ?1",
        "DELETE FROM task_edges WHERE child_id = ?1",
        "DELETE FROM fanouts WHERE join_id = ?1",
        "DELETE FROM tasks WHERE id = ?1",
    ] {
        let mut stmt = conn.prepare_cached(sql).map_err(internal)?;
        for id in ids {
            stmt.execute([id]).map_err(internal)?;
        }
    }
    Ok(())
}

pub(crate) fn prune_finished(conn: &Connection, st: &mut WriterState, p: PruneFinished) -> Result<usize> {
    let before = p.finished_before.as_micros();
    let plain: Vec<[u8; 16]> = conn
        .prepare_cached(
            "SELECT id FROM tasks WHERE finished_at < ?1 AND workflow_id IS NULL \
             AND state IN ('succeeded', 'failed', 'cancelled', 'expired') ORDER BY finished_at LIMIT ?2",
        )
        .and_then(|mut s| s.query_map(params![before, p.limit], |r| r.get(0))?.collect())
        .map_err(internal)?;
    delete_tasks(conn, st, &plain)?;
    let mut deleted = plain.len();
    // Whole workflows, once decided and with no task still running.
    while deleted < p.limit as usize {
        let wf: Option<[u8; 16]> = conn
            .prepare_cached(
                "SELECT w.id FROM workflows w WHERE w.finished_at < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM tasks t WHERE t.workflow_id = w.id AND t.state IN ('scheduled', 'ready', 'running')) \
                 ORDER BY w.finished_at LIMIT 1",
            )
            .and_then(|mut s| s.query_row([before], |r| r.get(0)).optional())
            .map_err(internal)?;
        let Some(wf) = wf else { break };
        let ids: Vec<[u8; 16]> = conn
            .prepare_cached("SELECT id FROM tasks WHERE workflow_id = ?1")
            .and_then(|mut s| s.query_map([wf], |r| r.get(0))?.collect())
            .map_err(internal)?;
        delete_tasks(conn, st, &ids)?;
        conn.prepare_cached("DELETE FROM task_edges WHERE parent_id = ?1")
            .and_then(|mut s| ids.iter().try_for_each(|id| s.execute([id]).map(drop)))
            .map_err(internal)?;
        conn.prepare_cached("DELETE FROM workflows WHERE id = ?1")
            .and_then(|mut s| s.execute([wf]))
            .map_err(internal)?;
        deleted += ids.len();
    }
    Ok(deleted)
}

pub(crate) fn acquire_lease(conn: &Connection, p: AcquireLease) -> Result<LeaseHolder> {
    let now = p.now.as_micros();
    let until = p.now.saturating_add(p.ttl).as_micros();
    let (holder, expires_at): (String, i64) = conn
        .prepare_cached(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
        )
        .and_then(|mut s| s.execute(params![p.name, p.holder, until, now]))
        .and_then(|_| {
            conn.prepare_cached("SELECT holder, expires_at FROM leases WHERE name = ?1")?
                .query_row([&p.name], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .map_err(internal)?;
    Ok(LeaseHolder { holder, expires_at: Timestamp::from_micros(expires_at) })
}

pub(crate) fn remove_queue(conn: &Connection, name: &str) -> Result<()> {
    match conn.prepare_cached("DELETE FROM queues WHERE name = ?1").and_then(|mut s| s.execute([name])) {
        Ok(0) => Err(StoreError::NotFound),
        Ok(_) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

pub(crate) fn queue_settings(conn: &Connection) -> Result<Vec<QueueSettings>> {
    conn.prepare_cached("SELECT name, paused, weight, limits FROM queues ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(QueueSettings {
                    name: r.get(0)?,
                    paused: r.get(1)?,
                    weight: r.get(2)?,
                    limits: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                })
            })?
            .collect()
        })
        .map_err(internal)
}

pub(crate) fn update_queue(conn: &Connection, st: &mut WriterState, p: UpdateQueue) -> Result<()> {
    let limits = p.limits.map(|l| serde_json::to_string(&l).expect("plain data serializes"));
    conn.prepare_cached(
        "INSERT INTO queues (name, paused, weight, limits, updated_at) \
         VALUES (?1, COALESCE(?2, 0), COALESCE(?3, 1), COALESCE(?5, '{}'), ?4) \
         ON CONFLICT (name) DO UPDATE SET paused = COALESCE(?2, paused), weight = COALESCE(?3, weight), \
         limits = COALESCE(?5, limits), updated_at = ?4",
    )
    .and_then(|mut s| s.execute(params![p.queue, p.paused, p.weight, p.now.as_micros(), limits]))
    .map_err(internal)?;
    if let Some(paused) = p.paused {
        st.events.push(conn, &NewEvent::queue(&p.queue, paused, p.now)).map_err(internal)?;
    }
    if p.paused == Some(false) || limits.is_some() {
        st.touch(Topic::Ready); // its tasks may be leased again: wake the parked fetchers
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    /// The plans SQLite makes of a fetch's reads, on the real schema: each through its own index
    /// of ready tasks, in its order (no sort), and never through an index of every task.
    #[test]
    fn a_fetch_reads_only_ready_tasks_in_the_order_of_their_index() {
        for (sql, index) in [(&*super::BEST_READY, "tasks_ready"), (&*super::OLDEST_READY, "tasks_ready_fifo")] {
            let steps = super::super::schema::query_plan(sql, params!["q", 16, None::<String>]);
            let search = steps.iter().find(|s| s.contains("tasks")).unwrap();
            assert!(search.contains(&format!("INDEX {index} (queue=?)")), "{steps:?}");
            assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{steps:?}");
        }
    }
}
