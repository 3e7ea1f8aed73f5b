//! Read-only queries. They run on a pool of reader connections, which WAL lets proceed while the
//! writer commits.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use taskwarden_core::protocol::{QueueInfo, WorkerInfo};
use taskwarden_core::{TaskId, Timestamp};

use super::internal;
use super::rows::{TASK_COLUMNS, load_history, load_task, task_from_row};
use taskwarden_core::search::Document;

use crate::list_query::{Arg, Dialect, ListQuery};
use crate::params::{ListTasks, TaskPage};
use crate::queue_stats::{COUNTED, Count, assemble};
use crate::{Result, StoreError};

pub(crate) fn get(conn: &Connection, id: TaskId) -> Result<taskwarden_core::Task> {
    let mut task = load_task(conn, id).map_err(internal)?.ok_or(StoreError::NotFound)?;
    load_history(conn, &mut task).map_err(internal)?;
    Ok(task)
}

/// SQLite's way of writing the list query.
const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    has_tag: "EXISTS (SELECT 1 FROM json_each(tasks.tags) WHERE json_each.value = ?)",
    error_like: "error LIKE ? ESCAPE '\\'",
    field: |doc| match doc {
        Document::Payload => "json_extract(payload, ?) = ?",
        Document::Result => "json_extract(result, ?) = ?",
    },
};

/// An argument as SQLite takes it. A JSON field's value is compared with what `json_extract`
/// gives: numbers as numbers, booleans as 1 and 0, strings as text.
fn value(a: &Arg<'_>) -> Value {
    match a {
        Arg::Text(s) => Value::Text((*s).to_owned()),
        Arg::Pattern(s) => Value::Text(s.clone()),
        Arg::Id(id) => Value::Blob(id.as_bytes().to_vec()),
        Arg::Path(m) => Value::Text(m.json_path()),
        Arg::Value(m) => match &m.value {
            serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        },
        Arg::Int(n) => Value::Integer(*n),
    }
}

pub(crate) fn list(conn: &Connection, p: &ListTasks) -> Result<TaskPage> {
    let q = ListQuery::new(p, &DIALECT);
    let mut stmt = conn.prepare_cached(&format!("SELECT {TASK_COLUMNS}{}", q.rows.sql)).map_err(internal)?;
    let tasks: Vec<_> = stmt
        .query_map(params_from_iter(q.rows.args.iter().map(value)), task_from_row)
        .map_err(internal)?
        .collect::<rusqlite::Result<_>>()
        .map_err(internal)?;
    let edge = match &q.edge {
        Some(edge) if tasks.len() < p.limit as usize => conn
            .prepare_cached(&format!("SELECT id{}", edge.sql))
            .and_then(|mut s| {
                s.query_row(params_from_iter(edge.args.iter().map(value)), |r| r.get::<_, [u8; 16]>(0)).optional()
            })
            .map_err(internal)?
            .map(TaskId::from_bytes),
        _ => None,
    };
    Ok(q.page(tasks, edge))
}

pub(crate) fn workers(conn: &Connection) -> Result<Vec<WorkerInfo>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT w.id, w.name, w.queues, w.concurrency, w.registered_at, w.last_seen_at, \
             (SELECT COUNT(*) FROM tasks t WHERE t.state = 'running' AND t.lease_worker = w.id), w.capacity, w.labels, \
             w.kinds \
             FROM workers w ORDER BY w.last_seen_at DESC LIMIT 1000",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map([], |r| {
            let queues: String = r.get(2)?;
            Ok(WorkerInfo {
                status: Default::default(),
                id: r.get(0)?,
                name: r.get(1)?,
                queues: serde_json::from_str(&queues).unwrap_or_default(),
                concurrency: r.get(3)?,
                registered_at: Timestamp::from_micros(r.get(4)?),
                last_seen_at: Timestamp::from_micros(r.get(5)?),
                running: r.get(6)?,
                capacity: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                labels: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                kinds: r.get::<_, Option<String>>(9)?.and_then(|k| serde_json::from_str(&k).ok()).unwrap_or_default(),
            })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}

/// One state's tasks counted by queue, through the state's partial index: the state is a
/// literal, failed tasks are asked for in the terms of the index they share with cancelled ones
/// (`tasks_dead`), and `+queue` keeps SQLite from walking the whole table in queue order
/// (`tasks_by_queue`) to spare itself sorting a few groups, which it otherwise prefers: that was
/// some 45 ms a state at 300,000 tasks, three states a call, on every scrape of `/metrics`.
/// Ready tasks can be many (a backlog), and their index is in queue order: it is named, and
/// they are grouped as it is walked instead of sorted first. Each ready row is still read, for
/// its `run_at` (19 ms a scrape at 100,000 ready). With `run_at` in that index the count read
/// the index alone (9 ms), but every drain was some 5% slower (each submit and lease writes
/// the wider entry; `bench/compare.sh 2bb8f0e 6 -- --only e2e`, 0.954), for a scrape a second
/// at most: not kept.
fn count_sql(what: &str) -> String {
    let (index, state, group) = match what {
        "ready" => (" INDEXED BY tasks_ready_fifo", "state = 'ready'".to_owned(), "queue"),
        "failed" => ("", "state IN ('failed', 'cancelled') AND state = 'failed'".to_owned(), "+queue"),
        _ => ("", format!("state = '{what}'"), "+queue"),
    };
    format!("SELECT queue, COUNT(*), MIN(run_at) FROM tasks{index} WHERE {state} GROUP BY {group}")
}

/// The queues and their counts; with `recent`, also the queues a task finished in lately, and
/// their last minute's successes (see `Store::queue_depths`).
pub(crate) fn queues(conn: &Connection, now: Timestamp, recent: bool) -> Result<Vec<QueueInfo>> {
    let mut counts = Vec::new();
    for what in COUNTED {
        let mut stmt = conn.prepare_cached(&count_sql(what)).map_err(internal)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Count {
                    queue: r.get(0)?,
                    what,
                    n: r.get::<_, i64>(1)? as u64,
                    earliest: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_micros),
                })
            })
            .map_err(internal)?;
        counts.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)?);
    }
    if !recent {
        return Ok(assemble(counts, super::ops::queue_settings(conn)?, now));
    }
    let (minute_ago, active_since) = crate::queue_stats::windows(now);
    // Every queue a task finished in lately (listed though idle now), with its last minute's
    // successes.
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, SUM(CASE WHEN finished_at >= ?1 AND state = 'succeeded' THEN 1 ELSE 0 END) \
             FROM tasks WHERE finished_at >= ?2 GROUP BY queue",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map([minute_ago, active_since], |r| {
            Ok(Count { queue: r.get(0)?, what: "succeeded", n: r.get::<_, i64>(1)? as u64, earliest: None })
        })
        .map_err(internal)?;
    counts.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)?);
    Ok(assemble(counts, super::ops::queue_settings(conn)?, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks, on the real schema: each counted state through its own partial
    /// index, never a walk of the whole table (a bare `SCAN tasks`, or one in queue order).
    #[test]
    fn each_state_is_counted_through_its_partial_index() {
        for what in COUNTED {
            let steps = super::super::schema::query_plan(&count_sql(what), []);
            let scan = steps.iter().find(|s| s.contains("tasks")).unwrap();
            assert!(scan.contains("INDEX tasks_") && !scan.contains("tasks_by_queue"), "{what}: {steps:?}");
            if what == "ready" {
                assert!(scan.contains("USING INDEX tasks_ready_fifo"), "{steps:?}");
                // A backlog is grouped as it is walked, not sorted first.
                assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{steps:?}");
            }
        }
    }
}
