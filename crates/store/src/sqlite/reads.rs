//! Read-only queries. They run on a pool of reader connections, which WAL lets proceed while the
//! writer commits.

use rusqlite::{Connection, ToSql};
use taskwarden_core::protocol::WorkerInfo;
use taskwarden_core::{TaskId, TaskState, Timestamp};

use super::internal;
use super::rows::{TASK_COLUMNS, load_history, load_task, task_from_row};
use crate::params::{ListTasks, TaskPage};
use crate::{Result, StoreError};

pub(crate) fn get(conn: &Connection, id: TaskId) -> Result<taskwarden_core::Task> {
    let mut task = load_task(conn, id).map_err(internal)?.ok_or(StoreError::NotFound)?;
    load_history(conn, &mut task).map_err(internal)?;
    Ok(task)
}

pub(crate) fn list(conn: &Connection, p: &ListTasks) -> Result<TaskPage> {
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, v: Box<dyn ToSql>| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(q) = &p.queue {
        bind(&mut sql, " AND queue = ?", Box::new(q.clone()));
    }
    if let Some(s) = p.state {
        // A literal, not a parameter, so the planner can pick the state's partial index. Safe: the
        // text comes from the enum, never from the caller.
        sql.push_str(&format!(" AND state = '{}'", s.as_str()));
        if matches!(s, TaskState::Failed | TaskState::Cancelled) {
            sql.push_str(" AND state IN ('failed', 'cancelled')");
        }
    }
    if let Some(k) = &p.kind {
        bind(&mut sql, " AND kind = ?", Box::new(k.clone()));
    }
    if let Some(t) = &p.tag {
        bind(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM json_each(tasks.tags) WHERE json_each.value = ?)",
            Box::new(t.clone()),
        );
    }
    if let Some(before) = p.before {
        bind(&mut sql, " AND id < ?", Box::new(before.as_bytes().to_vec()));
    }
    let limit = p.limit.max(1);
    bind(&mut sql, " ORDER BY id DESC LIMIT ?", Box::new(i64::from(limit)));
    let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let tasks: Vec<_> = stmt
        .query_map(refs.as_slice(), task_from_row)
        .map_err(internal)?
        .collect::<rusqlite::Result<_>>()
        .map_err(internal)?;
    let next = if tasks.len() == limit as usize { tasks.last().map(|t| t.id) } else { None };
    Ok(TaskPage { tasks, next })
}

pub(crate) fn workers(conn: &Connection) -> Result<Vec<WorkerInfo>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT w.id, w.name, w.queues, w.concurrency, w.registered_at, w.last_seen_at, \
             (SELECT COUNT(*) FROM tasks t WHERE t.state = 'running' AND t.lease_worker = w.id) \
             FROM workers w ORDER BY w.last_seen_at DESC LIMIT 1000",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map([], |r| {
            let queues: String = r.get(2)?;
            Ok(WorkerInfo {
                id: r.get(0)?,
                name: r.get(1)?,
                queues: serde_json::from_str(&queues).unwrap_or_default(),
                concurrency: r.get(3)?,
                registered_at: Timestamp::from_micros(r.get(4)?),
                last_seen_at: Timestamp::from_micros(r.get(5)?),
                running: r.get(6)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}
