//! Mapping between `tasks` rows and the core's `Task`. The only place that knows the columns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::value::RawValue;
use taskwarden_core::{Attempt, Lease, LeaseToken, Needs, Task, TaskId, TaskState, Timestamp};

pub(crate) const TASK_COLUMNS: &str = "id, queue, kind, payload, priority, tags, idempotency_key, state, \
    attempts, max_attempts, attempt_limit, backoff, timeout_ms, lease_timeout_ms, run_at, created_at, \
    updated_at, finished_at, lease_token, lease_worker, lease_attempt, lease_started_at, \
    lease_expires_at, lease_deadline, cancel_requested, result, error, progress, workflow_id, node, parent_count, \
    needs, expires_at, traceparent";

pub(crate) fn bad(column: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
}

fn raw(column: usize, s: String) -> rusqlite::Result<Box<RawValue>> {
    RawValue::from_string(s).map_err(|e| bad(column, e))
}

fn json<T: serde::de::DeserializeOwned>(column: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| bad(column, e))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_micros)
}

pub(crate) fn task_from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let id: [u8; 16] = r.get(0)?;
    let state: String = r.get(7)?;
    let state: TaskState = state.parse().map_err(|e: String| bad(7, std::io::Error::other(e)))?;
    let lease = match r.get::<_, Option<i64>>(18)? {
        Some(token) => Some(Lease {
            token: LeaseToken(token as u64),
            worker_id: r.get(19)?,
            attempt: r.get(20)?,
            started_at: Timestamp::from_micros(r.get(21)?),
            expires_at: Timestamp::from_micros(r.get(22)?),
            deadline: Timestamp::from_micros(r.get(23)?),
        }),
        None => None,
    };
    Ok(Task {
        id: TaskId::from_bytes(id),
        queue: r.get(1)?,
        kind: r.get(2)?,
        payload: raw(3, r.get(3)?)?,
        priority: r.get(4)?,
        tags: json(5, &r.get::<_, String>(5)?)?,
        idempotency_key: r.get(6)?,
        state,
        attempts: r.get(8)?,
        max_attempts: r.get(9)?,
        attempt_limit: r.get(10)?,
        backoff: json(11, &r.get::<_, String>(11)?)?,
        timeout: Duration::from_millis(r.get::<_, i64>(12)? as u64),
        lease_timeout: Duration::from_millis(r.get::<_, i64>(13)? as u64),
        run_at: Timestamp::from_micros(r.get(14)?),
        created_at: Timestamp::from_micros(r.get(15)?),
        updated_at: Timestamp::from_micros(r.get(16)?),
        finished_at: ts(r.get(17)?),
        lease,
        cancel_requested: r.get(24)?,
        result: r.get::<_, Option<String>>(25)?.map(|s| raw(25, s)).transpose()?,
        error: r.get(26)?,
        progress: r.get::<_, Option<String>>(27)?.map(|s| json(27, &s)).transpose()?,
        history: Vec::new(),
        workflow_id: r.get::<_, Option<[u8; 16]>>(28)?.map(TaskId::from_bytes),
        node: r.get(29)?,
        parent_count: r.get(30)?,
        needs: match r.get_ref(31)?.as_str_or_null()? {
            Some(s) => needs(s)?,
            None => Needs::default(),
        },
        expires_at: ts(r.get(32)?),
        traceparent: match r.get_ref(33)?.as_str_or_null()? {
            Some(s) => Some(s.parse().map_err(|e| bad(33, e))?),
            None => None,
        },
        unschedulable: None,
        event: None,
    })
}

/// Needs as stored. Many tasks share the same few (a queue's tasks mostly ask alike), so each
/// thread keeps the ones it decoded lately instead of parsing each row's again.
fn needs(s: &str) -> rusqlite::Result<Needs> {
    const KEPT: usize = 4096;
    thread_local! {
        static DECODED: RefCell<HashMap<Box<str>, Needs>> = RefCell::new(HashMap::new());
    }
    DECODED.with_borrow_mut(|decoded| {
        if let Some(n) = decoded.get(s) {
            return Ok(n.clone());
        }
        let n: Needs = json(31, s)?;
        if decoded.len() >= KEPT {
            decoded.clear();
        }
        decoded.insert(s.into(), n.clone());
        Ok(n)
    })
}

pub(crate) fn load_task(conn: &Connection, id: TaskId) -> rusqlite::Result<Option<Task>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?;
    stmt.query_row([id.as_bytes()], task_from_row).optional()
}

pub(crate) fn load_history(conn: &Connection, task: &mut Task) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT number, worker_id, started_at, finished_at, outcome, error FROM attempts \
         WHERE task_id = ?1 ORDER BY number",
    )?;
    let rows = stmt.query_map([task.id.as_bytes()], |r| {
        let outcome: String = r.get(4)?;
        Ok(Attempt {
            number: r.get(0)?,
            worker_id: r.get(1)?,
            started_at: Timestamp::from_micros(r.get(2)?),
            finished_at: Timestamp::from_micros(r.get(3)?),
            outcome: outcome.parse().map_err(|e: String| bad(4, std::io::Error::other(e)))?,
            error: r.get(5)?,
        })
    })?;
    task.history = rows.collect::<rusqlite::Result<_>>()?;
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// Inserts a new task, with its events not yet in a page (see `events::EventPage`).
pub(crate) fn insert_task(conn: &Connection, t: &Task, events: Option<&[u8]>) -> rusqlite::Result<()> {
    // A new task waits for all its parents: pending_parents starts at parent_count.
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO tasks ({TASK_COLUMNS}, pending_parents, concurrency_key, events) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
         ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, ?19, ?20, \
         ?21, ?22, ?24, ?25, ?21, ?23, ?26)"
    ))?;
    stmt.execute(params![
        t.id.as_bytes(),
        t.queue,
        t.kind,
        t.payload.get(),
        t.priority,
        to_json(&t.tags),
        t.idempotency_key,
        t.state.as_str(),
        t.attempts,
        t.max_attempts,
        t.attempt_limit,
        to_json(&t.backoff),
        t.timeout.as_millis() as i64,
        t.lease_timeout.as_millis() as i64,
        t.run_at.as_micros(),
        t.created_at.as_micros(),
        t.updated_at.as_micros(),
        t.finished_at.map(Timestamp::as_micros),
        t.workflow_id.as_ref().map(|w| w.as_bytes().as_slice()),
        t.node,
        t.parent_count,
        (!t.needs.is_empty()).then(|| to_json(&t.needs)),
        t.needs.concurrency_key,
        t.expires_at.map(Timestamp::as_micros),
        t.traceparent.map(|t| t.to_string()),
        events,
    ])?;
    Ok(())
}

/// Writes back the columns a transition can change, with the task's events not yet in a page.
pub(crate) fn save_task(conn: &Connection, t: &Task, events: Option<&[u8]>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET state = ?2, attempts = ?3, attempt_limit = ?4, run_at = ?5, updated_at = ?6, \
         finished_at = ?7, lease_token = ?8, lease_worker = ?9, lease_attempt = ?10, lease_started_at = ?11, \
         lease_expires_at = ?12, lease_deadline = ?13, cancel_requested = ?14, result = ?15, error = ?16, \
         progress = ?17, expires_at = ?18, events = ?19 WHERE id = ?1",
    )?;
    let l = t.lease.as_ref();
    stmt.execute(params![
        t.id.as_bytes(),
        t.state.as_str(),
        t.attempts,
        t.attempt_limit,
        t.run_at.as_micros(),
        t.updated_at.as_micros(),
        t.finished_at.map(Timestamp::as_micros),
        l.map(|l| l.token.0 as i64),
        l.map(|l| l.worker_id.as_str()),
        l.map(|l| l.attempt),
        l.map(|l| l.started_at.as_micros()),
        l.map(|l| l.expires_at.as_micros()),
        l.map(|l| l.deadline.as_micros()),
        t.cancel_requested,
        t.result.as_ref().map(|r| r.get()),
        t.error,
        t.progress.as_ref().map(to_json),
        t.expires_at.map(Timestamp::as_micros),
        events,
    ])?;
    Ok(())
}

pub(crate) fn insert_attempt(conn: &Connection, id: TaskId, a: &Attempt) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO attempts (task_id, number, worker_id, started_at, finished_at, outcome, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    stmt.execute(params![
        id.as_bytes(),
        a.number,
        a.worker_id,
        a.started_at.as_micros(),
        a.finished_at.as_micros(),
        a.outcome.as_str(),
        a.error,
    ])?;
    Ok(())
}
