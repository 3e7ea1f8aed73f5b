//! The event log on SQLite: appended by the row writers in the writer's transaction, read
//! forward by id from the read connections.
//!
//! The single writer commits one transaction at a time and each id is one more than the largest
//! (pruning never deletes the newest event), so ids increase in commit order: a reader that has
//! seen id `n` can never be handed an id below it.

use rusqlite::{Connection, params};
use taskwarden_core::events::{Event, EventId, NewEvent, TaskEvent};
use taskwarden_core::stats::EventMeasure;
use taskwarden_core::{Task, TaskId, Timestamp};

use super::internal;
use super::rows::bad;
use crate::Result;
use crate::params::{PruneEvents, ReadEvents};

/// Appends the event the task's last transition noted, if any.
pub(crate) fn append_task(conn: &Connection, task: &Task) -> rusqlite::Result<()> {
    let Some(e) = TaskEvent::of(task) else { return Ok(()) };
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![
        e.at.as_micros(),
        e.event_type.as_str(),
        e.queue,
        e.kind,
        e.task_id.as_bytes().as_slice(),
        e.workflow_id.as_ref().map(|t| t.as_bytes().as_slice()),
        e.attempt,
        e.tags_json(),
        e.data_json(),
    ])?;
    Ok(())
}

const INSERT: &str = "INSERT INTO events (at, type, queue, kind, task_id, workflow_id, attempt, tags, data) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

pub(crate) fn append(conn: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(INSERT)?;
    let tags = (!e.tags.is_empty()).then(|| serde_json::to_string(&e.tags).expect("strings serialize"));
    stmt.execute(params![
        e.at.as_micros(),
        e.event_type.as_str(),
        e.queue,
        e.kind,
        e.task_id.as_ref().map(|t| t.as_bytes().as_slice()),
        e.workflow_id.as_ref().map(|t| t.as_bytes().as_slice()),
        e.attempt,
        tags,
        e.data.to_string(),
    ])?;
    Ok(())
}

pub(crate) fn read(conn: &Connection, p: &ReadEvents) -> Result<Vec<Event>> {
    if p.after.tx != 0 {
        return Ok(Vec::new()); // an id from a PostgreSQL log: past the end of this one
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, type, queue, kind, task_id, workflow_id, attempt, tags, data FROM events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.after.seq as i64, p.limit], |r| {
            let event_type: String = r.get(2)?;
            let event_type = event_type.parse().map_err(|e: String| bad(2, std::io::Error::other(e)))?;
            let tags: Option<String> = r.get(8)?;
            let data: String = r.get(9)?;
            let task = |i| r.get::<_, Option<[u8; 16]>>(i).map(|b| b.map(TaskId::from_bytes));
            Ok((
                r.get::<_, i64>(0)?,
                NewEvent {
                    event_type,
                    at: Timestamp::from_micros(r.get(1)?),
                    queue: r.get(3)?,
                    kind: r.get(4)?,
                    task_id: task(5)?,
                    workflow_id: task(6)?,
                    attempt: r.get(7)?,
                    tags: tags.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
                    data: serde_json::from_str(&data).unwrap_or_default(),
                },
            ))
        })
        .map_err(internal)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, event) = row.map_err(internal)?;
        out.push(Event { id: EventId { tx: 0, seq: id as u64 }, event });
    }
    Ok(out)
}

pub(crate) fn read_measures(conn: &Connection, p: &ReadEvents) -> Result<Vec<EventMeasure>> {
    if p.after.tx != 0 {
        return Ok(Vec::new()); // an id from a PostgreSQL log: past the end of this one
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, type, queue, task_id IS NOT NULL, json_extract(data, '$.run_us'), \
             json_extract(data, '$.wait_us') FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.after.seq as i64, p.limit], |r| {
            let event_type = r.get_ref(2)?.as_str()?.parse().map_err(|e: String| bad(2, std::io::Error::other(e)))?;
            let micros = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
            Ok(EventMeasure {
                id: EventId { tx: 0, seq: r.get::<_, i64>(0)? as u64 },
                at: Timestamp::from_micros(r.get(1)?),
                event_type,
                queue: r.get(3)?,
                of_task: r.get(4)?,
                run_us: micros(5)?,
                wait_us: micros(6)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}

pub(crate) fn last_id(conn: &Connection) -> Result<EventId> {
    let seq: Option<i64> = conn.query_row("SELECT MAX(id) FROM events", [], |r| r.get(0)).map_err(internal)?;
    Ok(EventId { tx: 0, seq: seq.unwrap_or(0) as u64 })
}

/// Deletes the oldest events, in id order, while they are older than `before`: events are
/// appended in time order, so this stops at the first one to keep without an index on time.
/// The newest event always stays (see the module's note on ids).
pub(crate) fn prune(conn: &Connection, p: PruneEvents) -> Result<usize> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT MAX(id) FROM (SELECT id, at FROM events ORDER BY id LIMIT ?2) \
             WHERE at < ?1 AND id < (SELECT MAX(id) FROM events)",
            params![p.before.as_micros(), p.limit],
            |r| r.get(0),
        )
        .map_err(internal)?;
    let Some(last) = last else { return Ok(0) };
    conn.prepare_cached("DELETE FROM events WHERE id <= ?1").and_then(|mut s| s.execute([last])).map_err(internal)
}
