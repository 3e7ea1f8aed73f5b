//! The event log's entries: every state change, as the store records it in the same transaction
//! as the change, with an id that orders the log.
//!
//! A task's transitions (see [`crate::lifecycle`]) note what they did in [`Task::event`]; the
//! store appends that note, with the task, when it writes the task. Workflows, workers and queues
//! have their own constructors here. [`EventFilter`] is the one place that decides whether an
//! event matches what a reader asked for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::TaskId;
use crate::auth::QueueScope;
use crate::task::{Task, TaskState};
use crate::time::Timestamp;
use crate::workflow::WorkflowState;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A task was created (submitted, or as a workflow's or fan-out's node).
    TaskSubmitted,
    /// A worker leased the task and an attempt began.
    TaskStarted,
    /// The running attempt reported progress.
    TaskProgress,
    TaskSucceeded,
    /// The task failed for good (attempts spent, or a permanent failure): a dead letter.
    TaskFailed,
    /// An attempt failed and the task will run again (`data.run_at`).
    TaskRetrying,
    /// An attempt's lease expired (no heartbeat or result in time); the task will run again.
    TaskLeaseExpired,
    /// The worker gave the task back unfinished; it is ready again.
    TaskReleased,
    TaskCancelled,
    /// The task was not started before its `expires_at`.
    TaskExpired,
    /// A finished task was retried by hand (or by a workflow retry).
    TaskRetried,
    WorkflowStarted,
    WorkflowSucceeded,
    WorkflowFailed,
    WorkflowCancelled,
    /// A decided workflow was retried.
    WorkflowRetried,
    /// A worker registered.
    WorkerJoined,
    QueuePaused,
    QueueResumed,
}

impl EventType {
    pub const ALL: [EventType; 19] = [
        EventType::TaskSubmitted,
        EventType::TaskStarted,
        EventType::TaskProgress,
        EventType::TaskSucceeded,
        EventType::TaskFailed,
        EventType::TaskRetrying,
        EventType::TaskLeaseExpired,
        EventType::TaskReleased,
        EventType::TaskCancelled,
        EventType::TaskExpired,
        EventType::TaskRetried,
        EventType::WorkflowStarted,
        EventType::WorkflowSucceeded,
        EventType::WorkflowFailed,
        EventType::WorkflowCancelled,
        EventType::WorkflowRetried,
        EventType::WorkerJoined,
        EventType::QueuePaused,
        EventType::QueueResumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskSubmitted => "task.submitted",
            EventType::TaskStarted => "task.started",
            EventType::TaskProgress => "task.progress",
            EventType::TaskSucceeded => "task.succeeded",
            EventType::TaskFailed => "task.failed",
            EventType::TaskRetrying => "task.retrying",
            EventType::TaskLeaseExpired => "task.lease_expired",
            EventType::TaskReleased => "task.released",
            EventType::TaskCancelled => "task.cancelled",
            EventType::TaskExpired => "task.expired",
            EventType::TaskRetried => "task.retried",
            EventType::WorkflowStarted => "workflow.started",
            EventType::WorkflowSucceeded => "workflow.succeeded",
            EventType::WorkflowFailed => "workflow.failed",
            EventType::WorkflowCancelled => "workflow.cancelled",
            EventType::WorkflowRetried => "workflow.retried",
            EventType::WorkerJoined => "worker.joined",
            EventType::QueuePaused => "queue.paused",
            EventType::QueueResumed => "queue.resumed",
        }
    }

    /// Whether it says a task or workflow reached its end.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventType::TaskSucceeded
                | EventType::TaskFailed
                | EventType::TaskCancelled
                | EventType::TaskExpired
                | EventType::WorkflowSucceeded
                | EventType::WorkflowFailed
                | EventType::WorkflowCancelled
        )
    }

    /// The event a workflow reaching `state` makes, if that state is a decision.
    pub fn workflow_decided(state: WorkflowState) -> Option<EventType> {
        match state {
            WorkflowState::Succeeded => Some(EventType::WorkflowSucceeded),
            WorkflowState::Failed => Some(EventType::WorkflowFailed),
            WorkflowState::Cancelled => Some(EventType::WorkflowCancelled),
            WorkflowState::Running => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            format!("{s:?} is not an event type (one of {})", known.join(", "))
        })
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event's place in the log. Ids order the log: a reader that resumes after an id misses
/// nothing still kept and sees nothing twice.
///
/// The embedded store numbers events as it commits them (`seq`; `tx` is 0) and writes them as
/// a plain number. On PostgreSQL several nodes commit at once and a number drawn earlier may
/// commit later, so an event is placed by the transaction that wrote it (`tx`) and then by its
/// number, and only transactions older than every one still running are read: nothing can
/// commit before a position a reader has passed. Written `tx-seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub tx: u64,
    pub seq: u64,
}

impl EventId {
    /// Before every event.
    pub const START: EventId = EventId { tx: 0, seq: 0 };

    /// Appends the id as [`Display`](fmt::Display) writes it, without the formatting
    /// machinery: a stream writes two for every event it sends.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        if self.tx != 0 {
            out.extend_from_slice(digits.format(self.tx).as_bytes());
            out.push(b'-');
        }
        out.extend_from_slice(digits.format(self.seq).as_bytes());
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tx {
            0 => write!(f, "{}", self.seq),
            tx => write!(f, "{tx}-{}", self.seq),
        }
    }
}

impl FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an event id (a number, or two joined by '-')");
        let number = |p: &str| p.parse::<u64>().ok().filter(|_| p.bytes().all(|b| b.is_ascii_digit()));
        match s.split_once('-') {
            None => Ok(EventId { tx: 0, seq: number(s).ok_or_else(bad)? }),
            Some((tx, seq)) => Ok(EventId { tx: number(tx).ok_or_else(bad)?, seq: number(seq).ok_or_else(bad)? }),
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event as read from the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Its place in the log; give it back as `after` or `Last-Event-ID` to resume after it.
    #[schema(value_type = String, example = "42")]
    pub id: EventId,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// An event about to be appended: everything but its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewEvent {
    /// `task.submitted`, `task.started`, `task.progress`, `task.succeeded`, `task.failed`,
    /// `task.retrying`, `task.lease_expired`, `task.released`, `task.cancelled`, `task.expired`,
    /// `task.retried`, `workflow.started`, `workflow.succeeded`, `workflow.failed`,
    /// `workflow.cancelled`, `workflow.retried`, `worker.joined`, `queue.paused`, `queue.resumed`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub event_type: EventType,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The task's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<TaskId>,
    /// The attempt the event is about (task events from `task.started` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// What else there is to say: the error of a failure, the time of the next try, the progress,
    /// the worker, the workflow's name.
    #[serde(default)]
    #[schema(schema_with = crate::schema::any_json)]
    pub data: Value,
}

impl NewEvent {
    fn bare(event_type: EventType, at: Timestamp) -> NewEvent {
        NewEvent {
            event_type,
            at,
            queue: None,
            kind: None,
            task_id: None,
            workflow_id: None,
            attempt: None,
            tags: Vec::new(),
            data: Value::Object(Map::new()),
        }
    }

    /// The event the task's last transition noted, if it noted one (see [`Task::event`]).
    pub fn of_task(task: &Task) -> Option<NewEvent> {
        TaskEvent::of(task).map(|e| e.to_new_event())
    }

    /// A workflow began, or began again (`WorkflowRetried`).
    pub fn workflow(event_type: EventType, id: TaskId, name: Option<&str>, at: Timestamp) -> NewEvent {
        let data = match name {
            Some(n) => json!({ "name": n }),
            None => json!({}),
        };
        NewEvent { workflow_id: Some(id), data, ..NewEvent::bare(event_type, at) }
    }

    /// A workflow was decided.
    pub fn workflow_decided(id: TaskId, state: WorkflowState, error: Option<&str>, at: Timestamp) -> Option<NewEvent> {
        let event_type = EventType::workflow_decided(state)?;
        let data = match error {
            Some(e) => json!({ "error": e }),
            None => json!({}),
        };
        Some(NewEvent { workflow_id: Some(id), data, ..NewEvent::bare(event_type, at) })
    }

    pub fn worker_joined(worker_id: &str, queues: &[String], at: Timestamp) -> NewEvent {
        NewEvent {
            data: json!({ "worker_id": worker_id, "queues": queues }),
            ..NewEvent::bare(EventType::WorkerJoined, at)
        }
    }

    pub fn queue(name: &str, paused: bool, at: Timestamp) -> NewEvent {
        let event_type = if paused { EventType::QueuePaused } else { EventType::QueueResumed };
        NewEvent { queue: Some(name.to_owned()), ..NewEvent::bare(event_type, at) }
    }
}

/// A page of the event log.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    /// Where to go on from: give it back as `after`. Past the last event returned, and past
    /// events read that did not match the filter.
    #[schema(value_type = String, example = "42")]
    pub next: EventId,
}

/// Which events a reader wants: each given criterion must hold (a list: any of its values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub queues: Vec<String>,
    pub kinds: Vec<String>,
    pub types: Vec<EventType>,
    pub task: Option<TaskId>,
    /// The workflow's own events and its tasks'.
    pub workflow: Option<TaskId>,
    pub tag: Option<String>,
    /// The queues the reader may see (its token's). Events about no queue (workflows, workers)
    /// are shown only to a reader who may see every queue.
    pub scope: QueueScope,
}

impl EventFilter {
    pub fn matches(&self, e: &NewEvent) -> bool {
        self.matches_parts(e.event_type, e.queue.as_deref(), e.kind.as_deref(), e.task_id, e.workflow_id, |t| {
            e.tags.iter().any(|g| g == t)
        })
    }

    /// As [`EventFilter::matches`], on what a stored event's head holds.
    pub fn matches_head(&self, e: &EventHead<'_>) -> bool {
        self.matches_parts(e.event_type, e.queue.as_deref(), e.kind.as_deref(), e.task_id, e.workflow_id, |t| {
            e.tags.iter().any(|g| g == t)
        })
    }

    /// Whether every event matches: nothing asked for, and a reader who may see every queue.
    pub fn is_everything(&self) -> bool {
        self.queues.is_empty()
            && self.kinds.is_empty()
            && self.types.is_empty()
            && self.task.is_none()
            && self.workflow.is_none()
            && self.tag.is_none()
            && self.scope.is_all()
    }

    fn matches_parts(
        &self,
        event_type: EventType,
        queue: Option<&str>,
        kind: Option<&str>,
        task_id: Option<TaskId>,
        workflow_id: Option<TaskId>,
        has_tag: impl Fn(&str) -> bool,
    ) -> bool {
        let any = |wanted: &[String], got: Option<&str>| {
            wanted.is_empty() || got.is_some_and(|g| wanted.iter().any(|w| w == g))
        };
        let visible = match queue {
            Some(q) => self.scope.contains(q),
            None => self.scope.is_all(),
        };
        visible
            && any(&self.queues, queue)
            && any(&self.kinds, kind)
            && (self.types.is_empty() || self.types.contains(&event_type))
            && self.task.is_none_or(|t| task_id == Some(t))
            && self.workflow.is_none_or(|w| workflow_id == Some(w))
            && self.tag.as_deref().is_none_or(has_tag)
    }
}

/// An event as a store keeps it: its id, and the rest as the JSON object the API serves
/// ([`NewEvent`]'s form), written once, when it was appended. A stream sends it as it is, and
/// reads of it only what a filter asks ([`StoredEvent::head`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: EventId,
    pub json: String,
}

/// What a filter looks at in a stored event, read without its `data`.
#[derive(Debug, Deserialize)]
pub struct EventHead<'a> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(default, borrow)]
    pub queue: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub task_id: Option<TaskId>,
    #[serde(default)]
    pub workflow_id: Option<TaskId>,
    #[serde(default, borrow)]
    pub tags: Vec<std::borrow::Cow<'a, str>>,
}

impl StoredEvent {
    pub fn of(e: &Event) -> StoredEvent {
        StoredEvent { id: e.id, json: serde_json::to_string(&e.event).expect("an event serializes") }
    }

    pub fn head(&self) -> serde_json::Result<EventHead<'_>> {
        serde_json::from_str(&self.json)
    }

    pub fn parse(&self) -> serde_json::Result<Event> {
        Ok(Event { id: self.id, event: serde_json::from_str(&self.json)? })
    }

    /// Its type, read off the front of its JSON, where a serialized event has it.
    pub fn event_type(&self) -> Option<EventType> {
        let rest = self.json.strip_prefix(r#"{"type":""#)?;
        rest[..rest.find('"')?].parse().ok()
    }

    /// The event as the API's JSON ([`Event`]): its id, then the rest as stored.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"id":""#);
        self.id.write_to(out);
        out.push(b'"');
        match self.json.strip_prefix('{') {
            Some(rest) if rest.trim_start() != "}" => {
                out.push(b',');
                out.extend_from_slice(rest.as_bytes());
            }
            _ => out.push(b'}'),
        }
    }
}

mod json;

#[cfg(test)]
mod tests;

/// The event a task's last transition noted, borrowed from the task: what the stores append
/// with every write of a task, so it is made without copying the task's strings or building a
/// JSON map (see [`NewEvent::of_task`] for the owned form). It serializes as that form would.
#[derive(Debug, Serialize)]
pub struct TaskEvent<'a> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub at: Timestamp,
    pub queue: &'a str,
    pub kind: &'a str,
    pub task_id: TaskId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<TaskId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'a [String],
    data: TaskEventData<'a>,
}

/// A task event's `data`. The fields are in name order, as a JSON map's keys would be.
#[derive(Debug, Default, Serialize)]
struct TaskEventData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<&'a str>,
}

impl<'a> TaskEvent<'a> {
    /// What the per-minute roll-up takes of this event, were it appended as `id`.
    pub fn measure(&self, id: EventId) -> crate::stats::EventMeasure {
        self.measure_sharing(id, &mut None)
    }

    /// [`measure`](Self::measure), its queue's name shared with `last` (the name of the queue
    /// last measured, replaced when this event's differs): a writer appending runs of one
    /// queue's events makes the name once per run instead of once per event.
    pub fn measure_sharing(&self, id: EventId, last: &mut Option<std::sync::Arc<str>>) -> crate::stats::EventMeasure {
        let queue = match last {
            Some(q) if **q == *self.queue => q.clone(),
            _ => last.insert(self.queue.into()).clone(),
        };
        crate::stats::EventMeasure {
            id,
            at: self.at,
            event_type: self.event_type,
            queue: Some(queue),
            of_task: true,
            run_us: self.data.run_us,
            wait_us: self.data.wait_us,
        }
    }

    /// The event the task's last transition noted, if any.
    pub fn of(task: &'a Task) -> Option<TaskEvent<'a>> {
        let event_type = task.event?;
        let mut data = TaskEventData::default();
        match event_type {
            EventType::TaskSubmitted | EventType::TaskRetried => {
                data.state = Some(task.state.as_str());
                if task.state == TaskState::Scheduled && task.run_at != Timestamp::NEVER {
                    data.run_at = Some(task.run_at);
                }
            }
            EventType::TaskStarted => {
                if let Some(lease) = &task.lease {
                    data.worker_id = Some(&lease.worker_id);
                    // Ready (its run_at) to started: the queue wait.
                    data.wait_us = Some(lease.started_at.duration_since(task.run_at).as_micros() as u64);
                }
            }
            EventType::TaskProgress => {
                if let Some(p) = &task.progress {
                    data.fraction = Some(p.fraction);
                    data.message = p.message.as_deref();
                }
            }
            EventType::TaskRetrying | EventType::TaskLeaseExpired | EventType::TaskReleased => {
                data.error = task.error.as_deref();
                data.run_at = Some(task.run_at);
            }
            EventType::TaskFailed | EventType::TaskExpired | EventType::TaskCancelled => {
                data.error = task.error.as_deref();
            }
            _ => {}
        }
        // The attempt that just ended, for the outcomes that end one: how long it ran.
        if matches!(
            event_type,
            EventType::TaskSucceeded | EventType::TaskFailed | EventType::TaskRetrying | EventType::TaskLeaseExpired
        ) && let Some(last) = task.history.last()
        {
            data.run_us = Some(last.run_time().as_micros() as u64);
        }
        Some(TaskEvent {
            event_type,
            at: task.updated_at,
            queue: &task.queue,
            kind: &task.kind,
            task_id: task.id,
            workflow_id: task.workflow_id,
            attempt: (task.attempts > 0).then_some(task.attempts),
            tags: &task.tags,
            data,
        })
    }

    /// The event in its packed form, for [`PackedTaskEvent`].
    pub fn pack(&self) -> PackedTaskEvent<'a, &'a [String]> {
        let d = &self.data;
        PackedTaskEvent {
            event_type: self.event_type.as_str(),
            at: self.at.as_micros(),
            queue: self.queue,
            kind: self.kind,
            task_id: *self.task_id.as_bytes(),
            workflow_id: self.workflow_id.map(|w| *w.as_bytes()),
            attempt: self.attempt,
            tags: self.tags,
            error: d.error,
            fraction: d.fraction,
            message: d.message,
            run_at: d.run_at.map(Timestamp::as_micros),
            run_us: d.run_us,
            state: d.state,
            wait_us: d.wait_us,
            worker_id: d.worker_id,
        }
    }

    /// The event's `data`, as JSON text.
    pub fn data_json(&self) -> String {
        serde_json::to_string(&self.data).expect("plain data serializes")
    }

    /// The tags as the stores keep them: a JSON array, or nothing when there are none.
    pub fn tags_json(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| serde_json::to_string(self.tags).expect("strings serialize"))
    }

    pub fn to_new_event(&self) -> NewEvent {
        NewEvent {
            queue: Some(self.queue.to_owned()),
            kind: Some(self.kind.to_owned()),
            task_id: Some(self.task_id),
            workflow_id: self.workflow_id,
            attempt: self.attempt,
            tags: self.tags.to_vec(),
            data: serde_json::to_value(&self.data).expect("plain data serializes"),
            ..NewEvent::bare(self.event_type, self.at)
        }
    }
}

/// A task event in a compact form for a store to keep and hand back: every field of a
/// [`TaskEvent`], with the time in microseconds and ids as bytes, for a format without field
/// names (the embedded store packs its event pages with `postcard`). Packing one is a few
/// copies; serializing one as JSON was most of what appending an event cost the embedded store's
/// single writer, so its readers do that instead ([`PackedTaskEvent::event`] gives the
/// [`TaskEvent`] back, which serializes to the very JSON it would have).
///
/// Stored data: fields are only ever added at the end, and never reordered.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PackedTaskEvent<'a, Tags> {
    pub event_type: &'a str,
    pub at: i64,
    pub queue: &'a str,
    pub kind: &'a str,
    pub task_id: [u8; 16],
    pub workflow_id: Option<[u8; 16]>,
    pub attempt: Option<u32>,
    pub tags: Tags,
    #[serde(borrow)]
    pub error: Option<&'a str>,
    pub fraction: Option<f64>,
    #[serde(borrow)]
    pub message: Option<&'a str>,
    pub run_at: Option<i64>,
    pub run_us: Option<u64>,
    #[serde(borrow)]
    pub state: Option<&'a str>,
    pub wait_us: Option<u64>,
    #[serde(borrow)]
    pub worker_id: Option<&'a str>,
}

impl<'a> PackedTaskEvent<'a, Vec<String>> {
    /// The event it packs, or `None` for a type this build does not know.
    pub fn event(&self) -> Option<TaskEvent<'_>> {
        Some(TaskEvent {
            event_type: self.event_type.parse().ok()?,
            at: Timestamp::from_micros(self.at),
            queue: self.queue,
            kind: self.kind,
            task_id: TaskId::from_bytes(self.task_id),
            workflow_id: self.workflow_id.map(TaskId::from_bytes),
            attempt: self.attempt,
            tags: &self.tags,
            data: TaskEventData {
                error: self.error,
                fraction: self.fraction,
                message: self.message,
                run_at: self.run_at.map(Timestamp::from_micros),
                run_us: self.run_us,
                state: self.state,
                wait_us: self.wait_us,
                worker_id: self.worker_id,
            },
        })
    }
}
