//! Task logs on SQLite: appended with the heartbeat or report that carried them, within the
//! caps of [`taskwarden_core::task_logs`], and deleted with their task.

use rusqlite::{Connection, params};
use taskwarden_core::task_logs::{Held, LogLine, TaskLogLine, admit};
use taskwarden_core::{TaskId, Timestamp};

use super::internal;
use crate::Result;
use crate::params::ReadTaskLogs;

pub(crate) fn append(conn: &Connection, task: TaskId, attempt: u32, lines: Vec<LogLine>, now: Timestamp) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let (last, held_lines, held_bytes): (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(seq), 0), COUNT(*) FILTER (WHERE attempt = ?2), \
             COALESCE(SUM(length(CAST(line AS BLOB))) FILTER (WHERE attempt = ?2), 0) FROM task_logs WHERE task_id = ?1",
        )
        .and_then(|mut s| s.query_row(params![task.as_bytes(), attempt], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(internal)?;
    let admitted = admit(Held { lines: held_lines as u64, bytes: held_bytes as u64 }, lines, now);
    let mut insert = conn
        .prepare_cached("INSERT INTO task_logs (task_id, seq, attempt, at, line) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(internal)?;
    for (i, (at, line)) in admitted.into_iter().enumerate() {
        insert
            .execute(params![task.as_bytes(), last + 1 + i as i64, attempt, at.as_micros(), line])
            .map_err(internal)?;
    }
    Ok(())
}

pub(crate) fn read(conn: &Connection, p: &ReadTaskLogs) -> Result<Vec<TaskLogLine>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, attempt, at, line FROM task_logs WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.task_id.as_bytes(), p.after as i64, p.limit], |r| {
            Ok(TaskLogLine {
                seq: r.get::<_, i64>(0)? as u64,
                attempt: r.get(1)?,
                at: Timestamp::from_micros(r.get(2)?),
                line: r.get(3)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}
