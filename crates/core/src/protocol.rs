//! The HTTP protocol's request and response bodies: plain data shared by the server, the client
//! SDK and the worker SDK, so that all three agree on the wire format by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::backoff::Backoff;
use crate::id::{LeaseToken, TaskId};
use crate::limits::QueueLimits;
use crate::placement::{Labels, Resources};
use crate::task::{Progress, Task};
use crate::time::Timestamp;
use crate::trace_context::TraceParent;

/// A request to submit one task. Only `queue` and `kind` are required.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    #[schema(schema_with = crate::schema::name)]
    pub queue: String,
    /// The handler name a worker runs the task with.
    #[schema(schema_with = crate::schema::name)]
    pub kind: String,
    /// Any JSON value; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::any_json)]
    pub payload: Option<Box<RawValue>>,
    /// Higher runs first within a queue; from -1000 to 1000, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Run no earlier than this many milliseconds after submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time (instead of `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Timestamp>,
    /// Drop the task as `expired` if no attempt has started by this time (like Celery's
    /// `expires`); a running attempt finishes, but no retry starts after it. Later than the time
    /// the task is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The same, this many milliseconds after submission (instead of `expires_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    pub expires_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// Execution timeout of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800_000_u64)]
    pub timeout_ms: Option<u64>,
    /// How long a lease lasts without a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 3_600_000_u64)]
    pub lease_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub backoff: Option<Backoff>,
    /// A second submit with the same key, within the retention window, returns the first task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_tags)]
    pub tags: Option<Vec<String>>,
    /// Resources the worker must have free while the task runs: `{"gpu": 2, "memory_mb": 512}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_resources)]
    pub resources: Option<Resources>,
    /// Labels the worker must have: `{"region": "eu"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    /// Counts against the queue's `key_concurrency` limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub concurrency_key: Option<String>,
    /// Counts against the queue's `key_rate` limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub rate_key: Option<String>,
    /// The W3C trace context to run the task in (instead of a `traceparent` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

/// A request to submit several tasks atomically: all are accepted, or none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    #[serde(deserialize_with = "crate::bounded::batch_of_objects")]
    #[schema(min_items = 1, max_items = 10_000)]
    pub tasks: Vec<SubmitTask>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which tasks a bulk retry or cancel acts on (`POST /v1/tasks/retry`, `POST /v1/tasks/cancel`):
/// those matching every filter given, newest first, at most `limit` in one call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub queue: Option<String>,
    /// Retry: `failed` (the default), `cancelled` or `expired`. Cancel: `ready`, `scheduled` or `running`
    /// (default: all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub tag: Option<String>,
    /// A search in the query language (`payload.customer_id=42 error:timeout`), ANDed with the
    /// fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub q: Option<String>,
    /// Most tasks this call acts on (1 to 100,000; default 10,000). With more matching, the
    /// answer's `next_cursor` continues where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub limit: Option<u32>,
    /// From a previous answer's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_bulk_cursor)]
    pub cursor: Option<String>,
}

/// What a bulk retry or cancel did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkResult {
    /// Tasks that matched the filter (within the caller's queues) and were looked at.
    pub matched: u64,
    /// Of those, the ones retried or cancelled.
    pub changed: u64,
    /// The ones that had moved on meanwhile (finished, already retried) and were left alone.
    pub skipped: u64,
    /// More may match: pass this as `cursor` to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a bulk job does to the tasks its filter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Failed (or, with `state`, cancelled or expired) tasks go back to their queue.
    Retry,
    /// Ready, scheduled and running tasks are cancelled (running ones asked to stop).
    Cancel,
}

/// Starts a bulk retry or cancel that runs on the server to the end (`POST /v1/tasks/jobs`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkJobCall {
    pub action: BulkAction,
    /// Which tasks: as for `POST /v1/tasks/retry|cancel`, without `limit` and `cursor` (a job
    /// goes on until nothing more matches).
    #[serde(deserialize_with = "crate::bounded::object")]
    pub filter: BulkFilter,
}

/// Where a bulk job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkJobState {
    Running,
    /// Went through every matching task.
    Done,
    /// Stopped by an error (in `error`) or the server shutting down; what it changed stays changed.
    Stopped,
}

/// A bulk job and its progress (`GET /v1/tasks/jobs/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkJob {
    pub id: String,
    pub action: BulkAction,
    /// The filter, in words.
    pub filter: String,
    pub state: BulkJobState,
    /// Tasks looked at, changed, and left alone because they had moved on, so far.
    pub matched: u64,
    pub changed: u64,
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The token that started it.
    pub started_by: String,
    pub started_at: crate::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<crate::Timestamp>,
}

/// Registers a worker process with the server.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// A human-readable name, such as `hostname-pid`.
    #[schema(schema_with = crate::schema::name)]
    pub name: String,
    #[schema(schema_with = crate::schema::queue_list)]
    pub queues: Vec<String>,
    #[schema(minimum = 1, maximum = 100_000)]
    pub concurrency: u32,
    /// What it can run at once: `{"cpu": 8, "gpu": 1}`. Tasks asking for resources it lacks are
    /// never leased to it.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub capacity: Resources,
    /// Its labels: `{"region": "eu"}`.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Labels,
    /// The kinds it has handlers for. A worker that names them is leased no other kind, and a
    /// ready task whose kind no live worker of its queue runs is shown as unschedulable. Left
    /// out: it takes any kind (and says nothing about which).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::schema::kind_list)]
    pub kinds: Vec<String>,
    /// A JSON Schema for the payload of some of its kinds: `{"http.fetch": {"type": "object",
    /// "required": ["url"]}}`. From then on a submit of that kind whose payload does not match is
    /// refused with 422 naming the JSON path (`payload.url: required`), on every node. The
    /// schema registered last for a kind is the one in force; a worker that registers the kind
    /// without one leaves it as it is. External `$ref`s are not fetched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = crate::schema::kind_schemas)]
    pub schemas: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub queues: Vec<String>,
    pub concurrency: u32,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub capacity: Resources,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Labels,
    /// The kinds it has handlers for; absent when it did not say (it takes any kind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    pub registered_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Tasks currently leased to this worker.
    #[serde(default)]
    pub running: u32,
    /// `live` while it has been heard from lately, `lost` once it has not (a worker killed
    /// without a chance to say goodbye, or cut off). A lost worker holding no task is forgotten
    /// after a day, unless a token registered it.
    #[serde(default)]
    pub status: WorkerStatus,
}

/// Whether a worker has been heard from lately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    #[default]
    Live,
    Lost,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Live => "live",
            WorkerStatus::Lost => "lost",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// A queue: whether it is paused, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueInfo {
    pub name: String,
    /// A paused queue keeps its tasks and takes submits, but leases nothing until resumed.
    pub paused: bool,
    /// Its share when a worker serves several queues: they are served in proportion to their
    /// weights while all have work.
    pub weight: u32,
    pub ready: u64,
    pub scheduled: u64,
    pub running: u64,
    /// Dead letters: tasks that failed for good.
    pub failed: u64,
    /// How long the oldest ready task has been ready, if any is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ready_ms: Option<u64>,
    /// Tasks that succeeded in the last minute.
    pub succeeded_last_minute: u64,
    #[serde(default, skip_serializing_if = "QueueLimits::is_empty")]
    pub limits: QueueLimits,
    /// Ready tasks that no live worker could run (see `task get` for why).
    #[serde(default)]
    pub unschedulable: u64,
}

impl QueueInfo {
    /// A queue with nothing in it.
    pub fn empty(name: impl Into<String>) -> QueueInfo {
        QueueInfo {
            name: name.into(),
            paused: false,
            weight: 1,
            ready: 0,
            scheduled: 0,
            running: 0,
            failed: 0,
            oldest_ready_ms: None,
            succeeded_last_minute: 0,
            limits: QueueLimits::default(),
            unschedulable: 0,
        }
    }
}

/// The body of `PATCH /v1/queues/{name}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<u32>,
    /// Replaces the queue's limits when given; `{}` removes them all.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub limits: Option<QueueLimits>,
}

/// The largest queue weight.
pub const MAX_QUEUE_WEIGHT: u32 = 1000;

impl QueueUpdate {
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        match self.weight {
            Some(w) if w == 0 || w > MAX_QUEUE_WEIGHT => {
                Err(crate::ValidationError::new("weight", format!("must be between 1 and {MAX_QUEUE_WEIGHT}")))
            }
            _ => self.limits.as_ref().map_or(Ok(()), |l| l.validate().map_err(|e| e.within("limits"))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// Asks for up to `limit` tasks from `queues`, waiting up to `wait_ms` for one to arrive.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    #[schema(schema_with = crate::schema::queue_list)]
    pub queues: Vec<String>,
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60_000)]
    pub wait_ms: u64,
    /// Tasks this worker has finished whose outcomes are still on their way to the server: the
    /// resources they hold count as free on this worker, so a fetch right after a task ends is
    /// not answered short while its report is in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::bounded::batch")]
    #[schema(max_items = 10_000)]
    pub finished: Vec<TaskId>,
    /// Outcomes to record, as `POST /v1/workers/{id}/reports` would: a busy worker reports what
    /// it finished and asks for more in one request. They are recorded beside the fetch (which
    /// may not see them: list their tasks in `finished` too if their resources should count as
    /// free), durably before the answer; their results come back in `FetchResponse::reports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::bounded::batch_of_objects")]
    #[schema(max_items = 10_000)]
    pub reports: Vec<Report>,
}

/// A task handed to a worker under a lease.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeasedTask {
    pub id: TaskId,
    pub queue: String,
    pub kind: String,
    #[schema(schema_with = crate::schema::any_json)]
    pub payload: Box<RawValue>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease: LeaseToken,
    pub lease_expires_at: Timestamp,
    pub timeout_ms: u64,
    pub lease_timeout_ms: u64,
    /// For a workflow task: how many parents it has (their results: `/v1/tasks/{id}/parents`).
    #[serde(default)]
    pub parent_count: u32,
    /// The trace the task joins: the first attempt's run span is its child, a retry's links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FetchResponse {
    pub tasks: Vec<LeasedTask>,
    /// One result per report the fetch carried, in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ReportResult>,
}

/// How an attempt ended, as a worker reports it.
///
/// On the wire this is a flat object with a `status` of `succeeded` (with `result`), `failed`
/// (with `error`, and optionally `retry_after_ms` or `permanent`), `cancelled` or `released`.
/// (Flat rather than an internally tagged enum: serde cannot buffer a raw JSON `result` through a
/// tagged enum.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "OutcomeWire", into = "OutcomeWire")]
pub enum Outcome {
    Succeeded {
        result: Box<RawValue>,
    },
    Failed {
        error: String,
        /// Retry after this delay instead of the backoff policy.
        retry_after_ms: Option<u64>,
        /// Do not retry at all.
        permanent: bool,
    },
    /// The handler stopped because the task was cancelled.
    Cancelled,
    /// The worker gives the task back unfinished (it is shutting down).
    Released,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OutcomeStatus {
    Succeeded,
    Failed,
    Cancelled,
    Released,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeWire {
    status: OutcomeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_safe_u64")]
    retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    permanent: bool,
}

impl TryFrom<OutcomeWire> for Outcome {
    type Error = String;
    fn try_from(w: OutcomeWire) -> Result<Self, String> {
        // Each status takes only its own fields, as the schema says: a stray `error` on a success
        // is a client's bug, not something to drop silently.
        let failure_fields = w.error.is_some() || w.retry_after_ms.is_some() || w.permanent;
        let stray = match w.status {
            OutcomeStatus::Succeeded => failure_fields.then_some("error, retry_after_ms and permanent"),
            OutcomeStatus::Failed => w.result.is_some().then_some("result"),
            OutcomeStatus::Cancelled | OutcomeStatus::Released => {
                (failure_fields || w.result.is_some()).then_some("result, error, retry_after_ms and permanent")
            }
        };
        if let Some(fields) = stray {
            return Err(format!("an outcome of this status takes no {fields}"));
        }
        Ok(match w.status {
            OutcomeStatus::Succeeded => Outcome::Succeeded { result: w.result.unwrap_or_else(null_value) },
            OutcomeStatus::Failed => Outcome::Failed {
                error: w.error.ok_or("a failed outcome needs an `error` message")?,
                retry_after_ms: w.retry_after_ms,
                permanent: w.permanent,
            },
            OutcomeStatus::Cancelled => Outcome::Cancelled,
            OutcomeStatus::Released => Outcome::Released,
        })
    }
}

impl utoipa::PartialSchema for Outcome {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let status = |s: &str, description: &str| crate::schema::tagged_variant("status", s, description);
        OneOfBuilder::new()
            .item(status("succeeded", "The handler returned a result.").property("result", crate::schema::any_json()))
            .item(
                status("failed", "The handler failed; it is retried unless permanent or out of attempts.")
                    .property("error", ObjectBuilder::new().schema_type(Type::String))
                    .required("error")
                    .property(
                        "retry_after_ms",
                        ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null]))
                            .minimum(Some(0))
                            .maximum(Some(crate::bounded::MAX_SAFE_INTEGER as f64))
                            .description(Some(
                                "Retry after this delay instead of the backoff policy (cut to the longest allowed delay).",
                            )),
                    )
                    .property(
                        "permanent",
                        ObjectBuilder::new().schema_type(Type::Boolean).description(Some("Do not retry at all.")),
                    ),
            )
            .item(status("cancelled", "The handler stopped because the task was cancelled."))
            .item(status("released", "The worker gives the task back unfinished (it is shutting down)."))
            .description(Some("How an attempt ended, as a worker reports it."))
            .into()
    }
}
impl utoipa::ToSchema for Outcome {}

impl From<Outcome> for OutcomeWire {
    fn from(o: Outcome) -> Self {
        let wire = |status| OutcomeWire { status, result: None, error: None, retry_after_ms: None, permanent: false };
        match o {
            Outcome::Succeeded { result } => OutcomeWire { result: Some(result), ..wire(OutcomeStatus::Succeeded) },
            Outcome::Failed { error, retry_after_ms, permanent } => {
                OutcomeWire { error: Some(error), retry_after_ms, permanent, ..wire(OutcomeStatus::Failed) }
            }
            Outcome::Cancelled => wire(OutcomeStatus::Cancelled),
            Outcome::Released => wire(OutcomeStatus::Released),
        }
    }
}

fn null_value() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// One report in a batch.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub task_id: TaskId,
    pub lease: LeaseToken,
    #[serde(deserialize_with = "crate::bounded::object")]
    pub outcome: Outcome,
    /// How long the handler ran in microseconds, by the worker's own clock; absent when it never started. The
    /// attempt then counts as started that long before its outcome was recorded, not when it was
    /// leased: the time a prefetched task waited for a slot is not run time, nor counted as
    /// running in a workflow's speedup report.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_safe_u64")]
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub ran_us: Option<u64>,
    /// How long ago, in microseconds, the handler finished when this report was sent (it may
    /// have waited to be carried by the next fetch). The attempt's end is dated that much before
    /// the report was recorded (never before its start).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_safe_u64")]
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub done_ago_us: Option<u64>,
    /// Lines the handler logged that no heartbeat carried yet (see `GET /v1/tasks/{id}/logs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::bounded::batch_of_objects")]
    pub logs: Vec<crate::task_logs::LogLine>,
    /// The attempt's run span, when the worker traces: the server's report span is its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

impl Report {
    /// An outcome with no run time (the handler never started, or it is not known).
    pub fn new(task_id: TaskId, lease: LeaseToken, outcome: Outcome) -> Report {
        Report { task_id, lease, outcome, ran_us: None, done_ago_us: None, logs: Vec::new(), traceparent: None }
    }

    /// Gives a leased task back unfinished (`None` if it is not leased).
    pub fn release(task: &Task) -> Option<Report> {
        task.lease.as_ref().map(|l| Report::new(task.id, l.token, Outcome::Released))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    #[serde(deserialize_with = "crate::bounded::batch_of_objects")]
    #[schema(max_items = 10_000)]
    pub reports: Vec<Report>,
}

/// What became of one report or heartbeat in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Ok,
    /// The lease is no longer held: the worker must abandon the execution.
    LeaseLost,
    NotFound,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportResult {
    pub task_id: TaskId,
    pub status: ItemStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportBatchResponse {
    pub results: Vec<ReportResult>,
}

/// One lease a worker still holds, with optional progress to record.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldLease {
    pub task_id: TaskId,
    pub lease: LeaseToken,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub progress: Option<Progress>,
    /// Lines the handler logged since the last heartbeat (see `GET /v1/tasks/{id}/logs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::bounded::batch_of_objects")]
    pub logs: Vec<crate::task_logs::LogLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerHeartbeat {
    #[serde(deserialize_with = "crate::bounded::batch_of_objects")]
    #[schema(max_items = 10_000)]
    pub leases: Vec<HeldLease>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseStatus {
    pub task_id: TaskId,
    pub status: ItemStatus,
    /// The task was cancelled: the handler's cancellation token should fire.
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
}

impl LeaseStatus {
    /// The answer for a lease on a task that does not exist.
    pub fn not_found(task_id: TaskId) -> LeaseStatus {
        LeaseStatus { task_id, status: ItemStatus::NotFound, cancel_requested: false, lease_expires_at: None }
    }
}

/// The answer to a single-lease heartbeat or progress call.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseHeartbeatResponse {
    pub task_id: TaskId,
    /// The task was cancelled: the handler's cancellation token should fire.
    pub cancel_requested: bool,
    /// The lease's new expiry.
    pub lease_expires_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerHeartbeatResponse {
    pub leases: Vec<LeaseStatus>,
}

/// The single-task forms of the worker calls (`/v1/tasks/{id}/complete` and friends).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseCall {
    pub lease: LeaseToken,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteCall {
    pub lease: LeaseToken,
    #[serde(default = "null_value")]
    #[schema(schema_with = crate::schema::any_json)]
    pub result: Box<RawValue>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailCall {
    pub lease: LeaseToken,
    pub error: String,
    /// Retry after this delay instead of the backoff policy; at most 366 days by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_622_400_000_u64)]
    pub retry_after_ms: Option<u64>,
    #[serde(default)]
    pub permanent: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressCall {
    pub lease: LeaseToken,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub message: Option<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `invalid_field`, `not_found`, `lease_lost`, ...
    pub code: String,
    pub message: String,
    /// The offending field, as a path such as `tasks[3].queue`, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A page of a workflow task's parents' outcomes, in node order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParentList {
    pub parents: Vec<crate::workflow::ParentResult>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A kind as the server knows it: the live workers with a handler for it, its ready tasks and
/// the JSON Schema its payloads must match, if one was registered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KindInfo {
    #[schema(schema_with = crate::schema::name)]
    pub kind: String,
    /// Live workers that said they have a handler for it.
    pub workers: u32,
    /// The queues those workers serve.
    pub queues: Vec<String>,
    /// Its tasks ready to run, in every queue.
    pub ready: u64,
    /// The JSON Schema submitted payloads of this kind must match; absent: any payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::any_json)]
    pub schema: Option<Value>,
    /// When that schema was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registered_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KindList {
    pub kinds: Vec<KindInfo>,
}
