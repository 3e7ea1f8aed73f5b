//! The event log on PostgreSQL: appended by the statements that write tasks (one more part of
//! the same statement, so a change and its event commit together, even for a plain submit that
//! runs outside an explicit transaction), read forward in the order of
//! [`EventId`]: by the writing transaction, then by number.
//!
//! Several nodes commit at once, and a number drawn earlier may commit later than one drawn after
//! it. So each row keeps the id of the transaction that wrote it (`tx`), and readers see only rows
//! written by transactions older than the oldest one still running (the snapshot's `xmin`): every
//! such transaction has ended, and any that commits later has a larger id, so it sorts after
//! everything a reader has already passed.

use deadpool_postgres::GenericClient;
use taskwarden_core::events::{Event, EventId, NewEvent, TaskEvent};
use taskwarden_core::stats::EventMeasure;
use taskwarden_core::{Task, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{execute, query, query_opt, task_id, uuid};
use super::{PgResult, Shared};
use crate::StoreError;
use crate::params::{PruneEvents, ReadEvents};

/// Transactions that have ended, as of the reader's snapshot: below this, the log is final.
const FINAL: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::int8";

/// Events as parameter arrays, for appending them with one `unnest`.
#[derive(Default)]
pub(crate) struct EventRows {
    at: Vec<i64>,
    event_type: Vec<&'static str>,
    queue: Vec<Option<String>>,
    kind: Vec<Option<String>>,
    task: Vec<Option<Uuid>>,
    workflow: Vec<Option<Uuid>>,
    attempt: Vec<Option<i32>>,
    tags: Vec<Option<String>>,
    data: Vec<String>,
}

impl EventRows {
    /// The events the tasks' last transitions noted.
    pub fn of_tasks<'t>(shared: &Shared, tasks: impl IntoIterator<Item = &'t Task>) -> EventRows {
        let mut rows = EventRows::default();
        if !shared.event_log {
            return rows;
        }
        for e in tasks.into_iter().filter_map(TaskEvent::of) {
            rows.at.push(e.at.as_micros());
            rows.event_type.push(e.event_type.as_str());
            rows.queue.push(Some(e.queue.to_owned()));
            rows.kind.push(Some(e.kind.to_owned()));
            rows.task.push(Some(uuid(e.task_id)));
            rows.workflow.push(e.workflow_id.map(uuid));
            rows.attempt.push(e.attempt.map(|a| a as i32));
            rows.tags.push(e.tags_json());
            rows.data.push(e.data_json());
        }
        rows
    }

    pub fn push(&mut self, e: &NewEvent) {
        self.at.push(e.at.as_micros());
        self.event_type.push(e.event_type.as_str());
        self.queue.push(e.queue.clone());
        self.kind.push(e.kind.clone());
        self.task.push(e.task_id.map(uuid));
        self.workflow.push(e.workflow_id.map(uuid));
        self.attempt.push(e.attempt.map(|a| a as i32));
        self.tags.push((!e.tags.is_empty()).then(|| serde_json::to_string(&e.tags).expect("strings serialize")));
        self.data.push(e.data.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The nine parameters [`cte`] reads.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.at,
            &self.event_type,
            &self.queue,
            &self.kind,
            &self.task,
            &self.workflow,
            &self.attempt,
            &self.tags,
            &self.data,
        ]
    }
}

/// A common table expression (for a `WITH` clause) that appends the events in parameters
/// `$first` to `$first + 8` (see [`EventRows::params`]), to put in front of the statement that
/// writes their tasks.
pub(crate) fn cte(first: usize) -> String {
    let p: Vec<String> = (first..first + 9).map(|i| format!("${i}")).collect();
    format!(
        "appended_events AS (INSERT INTO events (at, type, queue, kind, task_id, workflow_id, attempt, tags, data) \
         SELECT * FROM unnest({}::int8[], {}::text[], {}::text[], {}::text[], {}::uuid[], {}::uuid[], {}::int4[], \
         {}::text[], {}::text[])) ",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
    )
}

/// Appends events on their own (workflow, worker and queue events).
pub(crate) async fn append(c: &impl GenericClient, shared: &Shared, events: &[NewEvent]) -> PgResult<()> {
    if !shared.event_log {
        return Ok(());
    }
    let mut rows = EventRows::default();
    for e in events {
        rows.push(e);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!("WITH {}SELECT 1", cte(1));
    execute(c, &sql, &rows.params()).await?;
    Ok(())
}

fn event(r: &Row) -> PgResult<Event> {
    let bad = |e: String| StoreError::Internal(format!("a stored event does not parse: {e}"));
    let tags: Option<String> = r.get(9);
    let data: String = r.get(10);
    Ok(Event {
        id: EventId { tx: r.get::<_, i64>(0) as u64, seq: r.get::<_, i64>(1) as u64 },
        event: NewEvent {
            event_type: r.get::<_, &str>(3).parse().map_err(bad)?,
            at: Timestamp::from_micros(r.get(2)),
            queue: r.get(4),
            kind: r.get(5),
            task_id: r.get::<_, Option<Uuid>>(6).map(task_id),
            workflow_id: r.get::<_, Option<Uuid>>(7).map(task_id),
            attempt: r.get::<_, Option<i32>>(8).map(|a| a as u32),
            tags: tags
                .map(|t| serde_json::from_str(&t).map_err(|e| bad(e.to_string())))
                .transpose()?
                .unwrap_or_default(),
            data: serde_json::from_str(&data).map_err(|e| bad(e.to_string()))?,
        },
    })
}

pub(crate) async fn read(c: &impl GenericClient, p: &ReadEvents) -> PgResult<Vec<Event>> {
    let sql = format!(
        "SELECT tx, id, at, type, queue, kind, task_id, workflow_id, attempt, tags, data FROM events \
         WHERE (tx, id) > ($1, $2) AND tx < {FINAL} ORDER BY tx, id LIMIT $3"
    );
    let (tx, seq) = (p.after.tx as i64, p.after.seq as i64);
    let rows = query(c, &sql, &[&tx, &seq, &(p.limit as i64)]).await?;
    rows.iter().map(event).collect()
}

pub(crate) async fn read_measures(c: &impl GenericClient, p: &ReadEvents) -> PgResult<Vec<EventMeasure>> {
    let sql = format!(
        "SELECT tx, id, at, type, queue, task_id IS NOT NULL, (data::json ->> 'run_us')::int8, \
         (data::json ->> 'wait_us')::int8 FROM events \
         WHERE (tx, id) > ($1, $2) AND tx < {FINAL} ORDER BY tx, id LIMIT $3"
    );
    let (tx, seq) = (p.after.tx as i64, p.after.seq as i64);
    let rows = query(c, &sql, &[&tx, &seq, &(p.limit as i64)]).await?;
    let bad = |e: String| StoreError::Internal(format!("a stored event does not parse: {e}"));
    rows.iter()
        .map(|r| {
            Ok(EventMeasure {
                id: EventId { tx: r.get::<_, i64>(0) as u64, seq: r.get::<_, i64>(1) as u64 },
                at: Timestamp::from_micros(r.get(2)),
                event_type: r.get::<_, &str>(3).parse().map_err(bad)?,
                queue: r.get::<_, Option<&str>>(4).map(Into::into),
                of_task: r.get(5),
                run_us: r.get::<_, Option<i64>>(6).map(|v| v as u64),
                wait_us: r.get::<_, Option<i64>>(7).map(|v| v as u64),
            })
        })
        .collect()
}

pub(crate) async fn last_id(c: &impl GenericClient) -> PgResult<EventId> {
    let sql = format!("SELECT tx, id FROM events WHERE tx < {FINAL} ORDER BY tx DESC, id DESC LIMIT 1");
    let row = query_opt(c, &sql, &[]).await?;
    Ok(row.map(|r| EventId { tx: r.get::<_, i64>(0) as u64, seq: r.get::<_, i64>(1) as u64 }).unwrap_or_default())
}

/// Deletes the oldest events while they are older than `before` (events are appended in time
/// order, so the oldest by position are the oldest by time, near enough for retention). The
/// newest event always stays, as on every store.
pub(crate) async fn prune(c: &impl GenericClient, p: &PruneEvents) -> PgResult<usize> {
    let deleted = execute(
        c,
        "DELETE FROM events WHERE (tx, id) IN (SELECT tx, id FROM \
         (SELECT tx, id, at FROM events ORDER BY tx, id LIMIT $2) oldest WHERE at < $1 \
         AND (tx, id) < (SELECT tx, id FROM events ORDER BY tx DESC, id DESC LIMIT 1))",
        &[&p.before.as_micros(), &(p.limit as i64)],
    )
    .await?;
    Ok(deleted as usize)
}
