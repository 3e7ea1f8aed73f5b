//! The task: its fields, its states and the attempts it has made.
//!
//! The transitions between states live in [`crate::lifecycle`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::backoff::Backoff;
use crate::events::EventType;
use crate::id::{LeaseToken, TaskId};
use crate::placement::{Labels, Resources};
use crate::time::{Timestamp, duration_ms};
use crate::trace_context::TraceParent;

/// A task's state. `succeeded`, `failed`, `cancelled` and `expired` are terminal; `failed` tasks
/// are kept as dead letters and can be retried by hand.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for its `run_at` (a delay, the backoff after a failed attempt, or, for a workflow
    /// task, its parents to finish).
    Scheduled,
    /// Due, waiting for a worker.
    Ready,
    /// Leased by a worker.
    Running,
    Succeeded,
    /// Attempts exhausted or failed permanently: a dead letter.
    Failed,
    Cancelled,
    /// Not started before its `expires_at`: dropped without running (again).
    Expired,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Expired,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Expired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
        }
    }
}

impl fmt::Display for TaskState {
    /// Honours width and alignment (`{:<10}`), so columns of states line up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!(
                "unknown state {s:?}; expected one of scheduled, ready, running, succeeded, failed, cancelled, expired"
            )
        })
    }
}

/// How far a running task has got, as reported by its handler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// From 0.0 to 1.0.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub message: Option<String>,
}

/// The lease a running task is held under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    /// The fencing token. Only the fetch answer to the worker that was leased the task carries
    /// it: the API shows a task with this hidden (see [`Task::redact`]), so holding a token is
    /// proof of having been leased the task.
    #[serde(default = "LeaseToken::hidden", skip_serializing_if = "LeaseToken::is_hidden")]
    pub token: LeaseToken,
    pub worker_id: String,
    /// The attempt this lease runs (1-based).
    pub attempt: u32,
    pub started_at: Timestamp,
    /// When the lease lapses unless a heartbeat extends it.
    pub expires_at: Timestamp,
    /// The latest a heartbeat can push `expires_at` to: start + execution timeout + one lease
    /// timeout of grace for the worker to report the timeout itself.
    pub deadline: Timestamp,
}

/// How an attempt ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// The lease expired (no heartbeat, or the execution timeout passed).
    TimedOut,
    Cancelled,
    /// The worker gave the task back (shutting down); does not count against `max_attempts`.
    Released,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Released => "released",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttemptOutcome::Succeeded,
            AttemptOutcome::Failed,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Cancelled,
            AttemptOutcome::Released,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| format!("unknown attempt outcome {s:?}"))
    }
}

/// One finished execution of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub number: u32,
    pub worker_id: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    pub fn run_time(&self) -> Duration {
        self.finished_at.duration_since(self.started_at)
    }
}

/// A validated request for a new task: everything but what the system assigns (id, state, times).
#[derive(Clone, Debug)]
pub struct NewTask {
    pub queue: String,
    pub kind: String,
    pub payload: Box<RawValue>,
    pub priority: i32,
    pub tags: Vec<String>,
    pub idempotency_key: Option<String>,
    /// When to run: `None` means as soon as possible.
    pub run_at: Option<Timestamp>,
    /// Delay from submission; used when `run_at` is `None`.
    pub delay: Duration,
    /// No attempt starts at or after this time: the task is dropped as `expired` instead.
    pub expires_at: Option<Timestamp>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub lease_timeout: Duration,
    /// Resources, labels and limit keys: where and when it may run.
    pub needs: Needs,
    /// The trace the task joins (see [`Task::traceparent`]).
    pub traceparent: Option<TraceParent>,
}

/// What a task asks of the worker that runs it, and the limit keys it counts against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Needs {
    /// Amounts the worker must have free (`gpu=2,memory_mb=512`); held while the task runs.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Labels the worker must have (`region=eu`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Labels,
    /// Counts against the queue's per-key concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Counts against the queue's per-key rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_key: Option<String>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        *self == Needs::default()
    }

    /// Whether it asks anything of the worker (resources or labels).
    pub fn constrains_worker(&self) -> bool {
        !self.resources.is_empty() || !self.labels.is_empty()
    }
}

/// A task, as stored and as returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub queue: String,
    pub kind: String,
    #[schema(schema_with = crate::schema::any_json)]
    pub payload: Box<RawValue>,
    pub priority: i32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The retry policy's attempt budget.
    pub max_attempts: u32,
    /// The attempt count at which the task is dead-lettered. Starts at `max_attempts`; a manual
    /// retry and a released lease move it on, so neither eats into the policy's budget.
    pub attempt_limit: u32,
    pub backoff: Backoff,
    #[serde(rename = "timeout_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    #[serde(rename = "lease_timeout_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub lease_timeout: Duration,
    pub run_at: Timestamp,
    /// No attempt starts at or after this time: a task not started by then is dropped as
    /// `expired` (a running attempt finishes; a retry it would need is not made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[schema(schema_with = crate::schema::any_json)]
    pub result: Option<Box<RawValue>>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Finished attempts, oldest first. Only filled in when a single task is fetched by id (a
    /// list leaves it out rather than show an empty history); the running attempt, if any, is
    /// described by `lease`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// The workflow this task is a node of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<TaskId>,
    /// The node's id within its workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How many workflow tasks this one depends on; their results are at `/v1/tasks/{id}/parents`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent_count: u32,
    #[serde(default, skip_serializing_if = "Needs::is_empty")]
    pub needs: Needs,
    /// The W3C trace context the task was submitted in: the server's submit span when the
    /// server exports traces, else the submitter's. Each attempt's run span joins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
    /// Why no live worker could run this task, while that is so. Worked out when the task is
    /// read through the API; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
    /// What the last transition applied to this value did, for the event log (see
    /// [`crate::events`]); the store appends it with the task. Never stored or shown.
    #[serde(skip)]
    pub event: Option<EventType>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NewTask {
    /// Why this task may not be answered with `earlier`, the task its idempotency key already
    /// names: a key stands for one task, so re-using it for a different queue, kind or payload is
    /// a caller's bug that must not be hidden by answering with the first task.
    pub fn conflicts_with(
        &self,
        earlier_queue: &str,
        earlier_kind: &str,
        earlier_payload: &RawValue,
    ) -> Option<String> {
        let key = self.idempotency_key.as_deref().unwrap_or_default();
        let what = if self.queue != earlier_queue {
            "queue"
        } else if self.kind != earlier_kind {
            "kind"
        } else if self.payload.get() != earlier_payload.get()
            && serde_json::from_str::<serde_json::Value>(self.payload.get()).ok()
                != serde_json::from_str::<serde_json::Value>(earlier_payload.get()).ok()
        {
            "payload"
        } else {
            return None;
        };
        Some(format!("idempotency key {key:?} was used for a task with a different {what}"))
    }
}

impl Task {
    /// Whether `worker` holds the task's current lease.
    pub fn leased_to(&self, worker: &str) -> bool {
        self.state == TaskState::Running && self.lease.as_ref().is_some_and(|l| l.worker_id == worker)
    }

    /// The task as the API shows it: the lease token is never shown (only the fetch answer
    /// carries it), and without `payloads` neither are the payload and result.
    pub fn redact(&mut self, payloads: bool) {
        if let Some(lease) = &mut self.lease {
            lease.token = LeaseToken::hidden();
        }
        if !payloads {
            self.payload = RawValue::from_string("null".into()).expect("null is JSON");
            if self.result.is_some() {
                self.result = Some(RawValue::from_string("null".into()).expect("null is JSON"));
            }
        }
    }

    /// A new task, ready at once or scheduled for later.
    pub fn new(id: TaskId, spec: NewTask, now: Timestamp) -> Task {
        let run_at = spec.run_at.unwrap_or_else(|| now.saturating_add(spec.delay));
        Task {
            id,
            queue: spec.queue,
            kind: spec.kind,
            payload: spec.payload,
            priority: spec.priority,
            tags: spec.tags,
            idempotency_key: spec.idempotency_key,
            state: if run_at <= now { TaskState::Ready } else { TaskState::Scheduled },
            attempts: 0,
            max_attempts: spec.max_attempts,
            attempt_limit: spec.max_attempts,
            backoff: spec.backoff,
            timeout: spec.timeout,
            lease_timeout: spec.lease_timeout,
            run_at,
            expires_at: spec.expires_at,
            created_at: now,
            updated_at: now,
            finished_at: None,
            lease: None,
            cancel_requested: false,
            result: None,
            error: None,
            progress: None,
            history: Vec::new(),
            workflow_id: None,
            node: None,
            parent_count: 0,
            needs: spec.needs,
            traceparent: spec.traceparent,
            unschedulable: None,
            event: Some(EventType::TaskSubmitted),
        }
    }

    /// A new workflow node. One with parents waits (scheduled, due never) until they finish; see
    /// [`Task::dependencies_met`].
    pub fn new_node(
        id: TaskId,
        spec: NewTask,
        workflow_id: TaskId,
        node: String,
        parents: u32,
        now: Timestamp,
    ) -> Task {
        let mut task = Task::new(id, spec, now);
        task.workflow_id = Some(workflow_id);
        task.node = Some(node);
        task.parent_count = parents;
        if parents > 0 {
            task.state = TaskState::Scheduled;
            task.run_at = Timestamp::NEVER;
        }
        task
    }

    /// The sum of the run times of the finished attempts.
    pub fn total_run_time(&self) -> Duration {
        self.history.iter().map(Attempt::run_time).sum()
    }
}

#[cfg(test)]
mod display_tests {
    use super::TaskState;

    /// Regression: `task list` printed `ready  q` where the state column should be 10 wide.
    #[test]
    fn a_state_pads_to_its_column() {
        assert_eq!(format!("{:<10}|", TaskState::Ready), "ready     |");
    }
}
