//! Taskwarden's pure core: the domain model and its rules, with no I/O and no clock reads.
//!
//! - [`address`]: which network addresses are off the public internet, and allow-lists.
//! - [`auth`]: roles, queue scopes and the rule that decides who may do what.
//! - [`task`]: the task, its states and attempts.
//! - [`task_logs`]: the lines handlers log, and the caps on what is kept.
//! - [`lifecycle`]: the state machine; every state change is a method on [`Task`] that either
//!   applies the change or refuses it and leaves the task untouched.
//! - [`backoff`]: the retry delay policy.
//! - [`events`]: the event log's entries, and which of them a reader asked for.
//! - [`id`]: time-ordered task ids and lease (fencing) tokens.
//! - [`bounded`]: request lists bounded while they are parsed.
//! - [`validate`]: input limits and validation that names the bad field.
//! - [`protocol`]: the HTTP request and response bodies shared by server and SDKs.
//! - [`schema`]: the OpenAPI schemas of what the derive cannot see (ids, times, names, rates).
//! - [`search`]: what task lists are filtered by, and the query language people type.
//! - [`stats`]: per-queue history by the minute, rolled up from the event log.
//! - [`time`]: timestamps; "now" is always an argument.
//! - [`trace_context`]: the W3C `traceparent` a task carries from its submitter to its spans.
//! - [`webhooks`]: endpoints sent the events they ask for, signed, at least once.
//! - [`workflow`]: workflow graphs (validation, ordering) and the speedup report.
//! - [`limits`]: concurrency and rate limits, and whether a worker fits a task.
//! - [`cron`]: cron schedules and which ticks fire.
//! - [`placement`]: which ready task goes to which worker (priority with aging, fair share,
//!   resources and labels, reservations for big tasks).

pub mod address;
pub mod auth;
pub mod backoff;
pub mod bounded;
pub mod cron;
pub mod events;
pub mod id;
pub mod lifecycle;
pub mod limits;
pub mod placement;
pub mod protocol;
pub mod schema;
pub mod search;
pub mod stats;
pub mod task;
pub mod task_logs;
pub mod time;
pub mod trace_context;
pub mod validate;
pub mod webhooks;
pub mod workflow;

pub use backoff::Backoff;
pub use id::{IdGenerator, LeaseToken, TaskId};
pub use lifecycle::{Cancellation, RetryRequest, RunTiming, TransitionError};
pub use task::{Attempt, AttemptOutcome, Lease, Needs, NewTask, Progress, Task, TaskState};
pub use time::Timestamp;
pub use trace_context::TraceParent;
pub use validate::{Limits, ValidationError};
