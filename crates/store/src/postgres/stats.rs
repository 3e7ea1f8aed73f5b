//! The per-minute history on PostgreSQL: rows added by the leader's roll-up of the event log.

use deadpool_postgres::GenericClient;
use taskwarden_core::Timestamp;
use taskwarden_core::events::EventId;
use taskwarden_core::stats::StatsRow;

use super::PgResult;
use super::rows::{Tx, execute, query, query_opt};
use crate::StoreError;
use crate::params::{AddStats, ReadStats};

pub(crate) async fn position(c: &impl GenericClient) -> PgResult<EventId> {
    let row = query_opt(c, "SELECT tx, seq FROM rollups WHERE name = 'stats'", &[]).await?;
    Ok(row.map(|r| EventId { tx: r.get::<_, i64>(0) as u64, seq: r.get::<_, i64>(1) as u64 }).unwrap_or_default())
}

pub(crate) async fn add(tx: &Tx<'_>, p: &AddStats) -> PgResult<()> {
    // The position row, locked: two nodes rolling up at once take turns, and the second finds
    // the position moved.
    execute(tx, "INSERT INTO rollups (name, tx, seq) VALUES ('stats', 0, 0) ON CONFLICT DO NOTHING", &[]).await?;
    let row = query_opt(tx, "SELECT tx, seq FROM rollups WHERE name = 'stats' FOR UPDATE", &[]).await?;
    let at = row.map(|r| EventId { tx: r.get::<_, i64>(0) as u64, seq: r.get::<_, i64>(1) as u64 }).unwrap_or_default();
    if at != p.from {
        return Err(StoreError::Conflict("the statistics were rolled up past this point already".into()).into());
    }
    for r in &p.rows {
        let n = |v: u64| v as i64;
        execute(
            tx,
            "INSERT INTO stats_minutes (minute, queue, submitted, started, succeeded, failed, retried, cancelled, \
             run_us_sum, run_count, wait_us_sum, wait_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (minute, queue) DO UPDATE SET submitted = stats_minutes.submitted + excluded.submitted, \
             started = stats_minutes.started + excluded.started, succeeded = stats_minutes.succeeded + excluded.succeeded, \
             failed = stats_minutes.failed + excluded.failed, retried = stats_minutes.retried + excluded.retried, \
             cancelled = stats_minutes.cancelled + excluded.cancelled, \
             run_us_sum = stats_minutes.run_us_sum + excluded.run_us_sum, \
             run_count = stats_minutes.run_count + excluded.run_count, \
             wait_us_sum = stats_minutes.wait_us_sum + excluded.wait_us_sum, \
             wait_count = stats_minutes.wait_count + excluded.wait_count",
            &[
                &r.minute.as_micros(),
                &r.queue,
                &n(r.submitted),
                &n(r.started),
                &n(r.succeeded),
                &n(r.failed),
                &n(r.retried),
                &n(r.cancelled),
                &n(r.run_us_sum),
                &n(r.run_count),
                &n(r.wait_us_sum),
                &n(r.wait_count),
            ],
        )
        .await?;
    }
    execute(tx, "UPDATE rollups SET tx = $1, seq = $2 WHERE name = 'stats'", &[&(p.to.tx as i64), &(p.to.seq as i64)])
        .await?;
    Ok(())
}

pub(crate) async fn read(c: &impl GenericClient, p: &ReadStats) -> PgResult<Vec<StatsRow>> {
    let rows = query(
        c,
        "SELECT minute, queue, submitted, started, succeeded, failed, retried, cancelled, run_us_sum, run_count, \
         wait_us_sum, wait_count FROM stats_minutes WHERE minute >= $1 AND minute < $2 \
         AND ($3::text IS NULL OR queue = $3) ORDER BY minute, queue LIMIT $4",
        &[&p.since.as_micros(), &p.until.as_micros(), &p.queue, &(p.limit as i64)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let n = |i| r.get::<_, i64>(i) as u64;
            StatsRow {
                minute: Timestamp::from_micros(r.get(0)),
                queue: r.get(1),
                submitted: n(2),
                started: n(3),
                succeeded: n(4),
                failed: n(5),
                retried: n(6),
                cancelled: n(7),
                run_us_sum: n(8),
                run_count: n(9),
                wait_us_sum: n(10),
                wait_count: n(11),
            }
        })
        .collect())
}

pub(crate) async fn prune(c: &impl GenericClient, before: Timestamp) -> PgResult<usize> {
    Ok(execute(c, "DELETE FROM stats_minutes WHERE minute < $1", &[&before.as_micros()]).await? as usize)
}
