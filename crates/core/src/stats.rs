//! Per-queue history at one-minute resolution, rolled up from the event log.
//!
//! The leader reads the event log forward from where it left off and adds each task event to its
//! queue's row for the minute it happened in ([`Rollup`]); the store adds the rows to what it
//! holds and moves the position on in one transaction. So the history survives restarts, needs
//! no Prometheus, and costs the hot write paths nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventId, EventType, NewEvent};
use crate::time::Timestamp;

const MINUTE_US: i64 = 60_000_000;

/// One queue's minute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsRow {
    /// The minute's start.
    pub minute: Timestamp,
    pub queue: String,
    pub submitted: u64,
    /// Attempts started.
    pub started: u64,
    pub succeeded: u64,
    /// Tasks that failed for good (dead letters).
    pub failed: u64,
    /// Attempts that failed or whose lease expired, with a retry to follow.
    pub retried: u64,
    pub cancelled: u64,
    /// Sum and count of the run time of attempts that ended (succeeded, failed or retried), in
    /// microseconds: their mean is `run_us_sum / run_count`.
    pub run_us_sum: u64,
    pub run_count: u64,
    /// Sum and count of queue waits (ready to started), in microseconds.
    pub wait_us_sum: u64,
    pub wait_count: u64,
}

impl StatsRow {
    /// Adds `other`'s counts (same minute and queue) to this row's.
    pub fn add(&mut self, other: &StatsRow) {
        self.submitted += other.submitted;
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.retried += other.retried;
        self.cancelled += other.cancelled;
        self.run_us_sum += other.run_us_sum;
        self.run_count += other.run_count;
        self.wait_us_sum += other.wait_us_sum;
        self.wait_count += other.wait_count;
    }
}

/// The answer of `GET /v1/stats`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsPage {
    /// By minute, then queue.
    pub rows: Vec<StatsRow>,
}

/// What the roll-up needs of one event: a store reads just this (`data`'s two numbers picked out
/// by the database), rather than whole events whose JSON the roll-up would parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMeasure {
    pub id: EventId,
    pub at: Timestamp,
    pub event_type: EventType,
    /// Shared: a writer appending many events of one queue makes the name once.
    pub queue: Option<std::sync::Arc<str>>,
    /// Whether the event is about a task.
    pub of_task: bool,
    /// `data.run_us`: how long the attempt that just ended ran.
    pub run_us: Option<u64>,
    /// `data.wait_us`: how long the task waited to start.
    pub wait_us: Option<u64>,
}

impl EventMeasure {
    /// What the roll-up takes of a whole event.
    pub fn of(e: &Event) -> EventMeasure {
        EventMeasure::of_new(e.id, &e.event)
    }

    /// What the roll-up takes of an event about to be appended as `id`.
    pub fn of_new(id: EventId, ev: &NewEvent) -> EventMeasure {
        let micros = |key: &str| ev.data.get(key).and_then(|v| v.as_u64());
        EventMeasure {
            id,
            at: ev.at,
            event_type: ev.event_type,
            queue: ev.queue.as_deref().map(Into::into),
            of_task: ev.task_id.is_some(),
            run_us: micros("run_us"),
            wait_us: micros("wait_us"),
        }
    }
}

/// What a store hands the roll-up of a stretch of the event log: one event's measure, or a run
/// of events it summed into rows as it wrote them (the embedded store sums each page of events
/// it writes, so that the roll-up reads a few rows per page rather than parsing every event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured {
    Event(EventMeasure),
    Summed {
        /// The last event of the run.
        last: EventId,
        /// How many events it holds.
        events: u32,
        rows: Vec<StatsRow>,
    },
}

/// Rows being rolled up from a stretch of the event log.
#[derive(Debug, Default)]
pub struct Rollup {
    /// By minute, then queue.
    rows: BTreeMap<Timestamp, BTreeMap<String, StatsRow>>,
    /// The last event taken in.
    pub last: Option<EventId>,
}

impl Rollup {
    /// Takes in one event (events about no queue, or about no task, count nowhere).
    pub fn take(&mut self, e: &Event) {
        self.take_measure(&EventMeasure::of(e));
    }

    /// Takes in what the roll-up needs of one event (see [`EventMeasure`]).
    pub fn take_measure(&mut self, m: &EventMeasure) {
        self.last = Some(m.id);
        let (Some(queue), true) = (m.queue.as_deref(), m.of_task) else { return };
        let minute = Timestamp::from_micros(m.at.as_micros().div_euclid(MINUTE_US) * MINUTE_US);
        let row = self.row(minute, queue);
        let ran = |row: &mut StatsRow| {
            if let Some(us) = m.run_us {
                row.run_us_sum += us;
                row.run_count += 1;
            }
        };
        match m.event_type {
            EventType::TaskSubmitted => row.submitted += 1,
            EventType::TaskStarted => {
                row.started += 1;
                if let Some(us) = m.wait_us {
                    row.wait_us_sum += us;
                    row.wait_count += 1;
                }
            }
            EventType::TaskSucceeded => {
                row.succeeded += 1;
                ran(row);
            }
            EventType::TaskFailed => {
                row.failed += 1;
                ran(row);
            }
            EventType::TaskRetrying | EventType::TaskLeaseExpired => {
                row.retried += 1;
                ran(row);
            }
            EventType::TaskCancelled | EventType::TaskExpired => row.cancelled += 1,
            _ => {}
        }
    }

    /// Takes in what a store read of the log: one event's measure or a run of them summed.
    pub fn take_measured(&mut self, m: &Measured) {
        match m {
            Measured::Event(m) => self.take_measure(m),
            Measured::Summed { last, rows, .. } => {
                self.last = Some(*last);
                for r in rows {
                    self.row(r.minute, &r.queue).add(r);
                }
            }
        }
    }

    /// The queue's row for the minute, made empty if new (the queue's name is copied only then).
    fn row(&mut self, minute: Timestamp, queue: &str) -> &mut StatsRow {
        let queues = self.rows.entry(minute).or_default();
        if !queues.contains_key(queue) {
            queues.insert(queue.to_owned(), StatsRow { minute, queue: queue.to_owned(), ..StatsRow::default() });
        }
        queues.get_mut(queue).expect("just made")
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// The rows, by minute then queue.
    pub fn into_rows(self) -> Vec<StatsRow> {
        self.rows.into_values().flat_map(BTreeMap::into_values).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::TaskId;
    use crate::events::NewEvent;

    fn event(seq: u64, at_s: i64, t: EventType, queue: &str, data: serde_json::Value) -> Event {
        Event {
            id: EventId { tx: 0, seq },
            event: NewEvent {
                event_type: t,
                at: Timestamp::from_millis(at_s * 1000),
                queue: Some(queue.into()),
                kind: Some("k".into()),
                task_id: Some(TaskId::from_bytes([seq as u8; 16])),
                workflow_id: None,
                attempt: None,
                tags: vec![],
                data,
            },
        }
    }

    #[test]
    fn events_add_up_per_queue_and_minute() {
        let mut r = Rollup::default();
        r.take(&event(1, 0, EventType::TaskSubmitted, "a", json!({})));
        r.take(&event(2, 10, EventType::TaskStarted, "a", json!({"wait_us": 2000})));
        r.take(&event(3, 59, EventType::TaskSucceeded, "a", json!({"run_us": 500})));
        r.take(&event(4, 60, EventType::TaskRetrying, "a", json!({"run_us": 100})));
        r.take(&event(5, 61, EventType::TaskFailed, "b", json!({})));
        let mut worker = event(6, 62, EventType::WorkerJoined, "b", json!({}));
        worker.event.queue = None;
        r.take(&worker);
        assert_eq!(r.last, Some(EventId { tx: 0, seq: 6 }));
        let rows = r.into_rows();
        assert_eq!(rows.len(), 3);
        let first = &rows[0];
        assert_eq!((first.minute, first.queue.as_str()), (Timestamp::from_millis(0), "a"));
        assert_eq!((first.submitted, first.started, first.succeeded), (1, 1, 1));
        assert_eq!((first.wait_us_sum, first.wait_count, first.run_us_sum, first.run_count), (2000, 1, 500, 1));
        assert_eq!((rows[1].minute, rows[1].queue.as_str(), rows[1].retried), (Timestamp::from_millis(60_000), "a", 1));
        assert_eq!((rows[2].queue.as_str(), rows[2].failed, rows[2].run_count), ("b", 1, 0));
        let mut sum = rows[0].clone();
        sum.add(&rows[0]);
        assert_eq!(sum.submitted, 2);
    }

    #[test]
    fn summed_runs_roll_up_as_their_events_do() {
        let events: Vec<Event> = (0..40u64)
            .map(|i| {
                let t = [EventType::TaskSubmitted, EventType::TaskStarted, EventType::TaskSucceeded][i as usize % 3];
                let queue = if i % 5 == 0 { "b" } else { "a" };
                event(i + 1, i as i64 * 7, t, queue, json!({"run_us": i * 10, "wait_us": i}))
            })
            .collect();
        let mut one_by_one = Rollup::default();
        events.iter().for_each(|e| one_by_one.take(e));
        // The same events handed over as runs of various lengths, each summed by itself first,
        // with a single event between runs.
        let mut mixed = Rollup::default();
        for (i, run) in events.chunks(9).enumerate() {
            let (single, rest) = run.split_first().unwrap();
            mixed.take_measured(&Measured::Event(EventMeasure::of(single)));
            let mut sum = Rollup::default();
            rest.iter().for_each(|e| sum.take(e));
            let last = rest.last().unwrap().id;
            mixed.take_measured(&Measured::Summed { last, events: rest.len() as u32, rows: sum.into_rows() });
            assert_eq!(mixed.last, Some(last), "run {i}");
        }
        assert_eq!(mixed.last, one_by_one.last);
        assert_eq!(mixed.into_rows(), one_by_one.into_rows());
    }
}
