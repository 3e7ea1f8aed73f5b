//! The per-minute history on SQLite: rows added by the leader's roll-up of the event log.

use rusqlite::{Connection, OptionalExtension, params};
use taskwarden_core::Timestamp;
use taskwarden_core::events::EventId;
use taskwarden_core::stats::StatsRow;

use super::internal;
use crate::params::{AddStats, ReadStats};
use crate::{Result, StoreError};

pub(crate) fn position(conn: &Connection) -> Result<EventId> {
    let at: Option<(i64, i64)> = conn
        .query_row("SELECT tx, seq FROM rollups WHERE name = 'stats'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(internal)?;
    Ok(at.map(|(tx, seq)| EventId { tx: tx as u64, seq: seq as u64 }).unwrap_or_default())
}

pub(crate) fn add(conn: &Connection, p: AddStats) -> Result<()> {
    if position(conn)? != p.from {
        return Err(StoreError::Conflict("the statistics were rolled up past this point already".into()));
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO stats_minutes (minute, queue, submitted, started, succeeded, failed, retried, cancelled, \
             run_us_sum, run_count, wait_us_sum, wait_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (minute, queue) DO UPDATE SET submitted = submitted + excluded.submitted, \
             started = started + excluded.started, succeeded = succeeded + excluded.succeeded, \
             failed = failed + excluded.failed, retried = retried + excluded.retried, \
             cancelled = cancelled + excluded.cancelled, run_us_sum = run_us_sum + excluded.run_us_sum, \
             run_count = run_count + excluded.run_count, wait_us_sum = wait_us_sum + excluded.wait_us_sum, \
             wait_count = wait_count + excluded.wait_count",
        )
        .map_err(internal)?;
    for r in &p.rows {
        upsert
            .execute(params![
                r.minute.as_micros(),
                r.queue,
                r.submitted as i64,
                r.started as i64,
                r.succeeded as i64,
                r.failed as i64,
                r.retried as i64,
                r.cancelled as i64,
                r.run_us_sum as i64,
                r.run_count as i64,
                r.wait_us_sum as i64,
                r.wait_count as i64,
            ])
            .map_err(internal)?;
    }
    conn.prepare_cached(
        "INSERT INTO rollups (name, tx, seq) VALUES ('stats', ?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, seq = excluded.seq",
    )
    .and_then(|mut s| s.execute(params![p.to.tx as i64, p.to.seq as i64]))
    .map_err(internal)?;
    Ok(())
}

pub(crate) fn read(conn: &Connection, p: &ReadStats) -> Result<Vec<StatsRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT minute, queue, submitted, started, succeeded, failed, retried, cancelled, run_us_sum, run_count, \
             wait_us_sum, wait_count FROM stats_minutes WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR queue = ?3) \
             ORDER BY minute, queue LIMIT ?4",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.since.as_micros(), p.until.as_micros(), p.queue, p.limit], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok(StatsRow {
                minute: Timestamp::from_micros(r.get(0)?),
                queue: r.get(1)?,
                submitted: n(2)?,
                started: n(3)?,
                succeeded: n(4)?,
                failed: n(5)?,
                retried: n(6)?,
                cancelled: n(7)?,
                run_us_sum: n(8)?,
                run_count: n(9)?,
                wait_us_sum: n(10)?,
                wait_count: n(11)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}

pub(crate) fn prune(conn: &Connection, before: Timestamp) -> Result<usize> {
    conn.prepare_cached("DELETE FROM stats_minutes WHERE minute < ?1")
        .and_then(|mut s| s.execute([before.as_micros()]))
        .map_err(internal)
}
