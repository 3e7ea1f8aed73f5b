//! Task logs on PostgreSQL: appended in the transaction of the heartbeat or report that carried
//! them, within the caps of [`taskwarden_core::task_logs`], and deleted with their task.

use deadpool_postgres::GenericClient;
use taskwarden_core::task_logs::{Held, LogLine, TaskLogLine, admit};
use taskwarden_core::{TaskId, Timestamp};

use super::PgResult;
use super::rows::{Tx, execute, query, query_opt, uuid};
use crate::params::ReadTaskLogs;

/// Appends each task's lines (a task's attempt holds its lease, checked by the caller).
pub(crate) async fn append(tx: &Tx<'_>, logs: Vec<(TaskId, u32, Vec<LogLine>)>, now: Timestamp) -> PgResult<()> {
    for (task, attempt, lines) in logs {
        let id = uuid(task);
        let row = query_opt(
            tx,
            "SELECT COALESCE(MAX(seq), 0), COUNT(*) FILTER (WHERE attempt = $2), \
             COALESCE(SUM(octet_length(line)) FILTER (WHERE attempt = $2), 0)::int8 FROM task_logs WHERE task_id = $1",
            &[&id, &(attempt as i32)],
        )
        .await?
        .expect("an aggregate answers one row");
        let (last, held_lines, held_bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let admitted = admit(Held { lines: held_lines as u64, bytes: held_bytes as u64 }, lines, now);
        if admitted.is_empty() {
            continue;
        }
        let seqs: Vec<i64> = (1..=admitted.len() as i64).map(|i| last + i).collect();
        let ats: Vec<i64> = admitted.iter().map(|(at, _)| at.as_micros()).collect();
        let texts: Vec<&str> = admitted.iter().map(|(_, l)| l.as_str()).collect();
        execute(
            tx,
            "INSERT INTO task_logs (task_id, seq, attempt, at, line) \
             SELECT $1, seq, $2, at, line FROM unnest($3::int8[], $4::int8[], $5::text[]) AS u(seq, at, line)",
            &[&id, &(attempt as i32), &seqs, &ats, &texts],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn read(c: &impl GenericClient, p: &ReadTaskLogs) -> PgResult<Vec<TaskLogLine>> {
    let rows = query(
        c,
        "SELECT seq, attempt, at, line FROM task_logs WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&uuid(p.task_id), &(p.after as i64), &(p.limit as i64)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| TaskLogLine {
            seq: r.get::<_, i64>(0) as u64,
            attempt: r.get::<_, i32>(1) as u32,
            at: Timestamp::from_micros(r.get(2)),
            line: r.get(3),
        })
        .collect())
}
