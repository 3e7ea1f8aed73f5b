//! One parameter struct per store method, so that adding a field never changes a signature.

use std::time::Duration;

use taskwarden_core::cron::CronSpec;
use taskwarden_core::limits::QueueLimits;
use taskwarden_core::placement::{Labels, Resources};
use taskwarden_core::protocol::{HeldLease, Report};
use taskwarden_core::search::TaskSearch;
use taskwarden_core::workflow::{FanOutPlan, WorkflowPlan};
use taskwarden_core::{Cancellation, LeaseToken, Needs, NewTask, Task, TaskId, TaskState, Timestamp};

pub struct SubmitTasks {
    /// Accepted together or not at all.
    pub tasks: Vec<NewTask>,
    /// How long an idempotency key keeps returning the task it first created.
    pub idempotency_window: Duration,
    pub now: Timestamp,
}

pub struct Submitted {
    pub task: Task,
    /// False when an idempotency key matched an earlier task, which is returned instead.
    pub created: bool,
}

#[derive(Default, Clone)]
pub struct ListTasks {
    /// Which tasks (see `taskwarden_core::search`).
    pub filter: TaskSearch,
    /// Newest first; return tasks older than this one.
    pub before: Option<TaskId>,
    pub limit: u32,
    /// When the filter needs rows looked into (kind, tag, worker, error, JSON fields): look at
    /// no more than this many of them, newest first, and answer with what matched among them
    /// and a cursor after the last one looked at, so every page costs a bounded scan however
    /// rare the matches. `None`: look until the page is full.
    pub window: Option<u32>,
}

pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// The cursor for the next page, when there may be one.
    pub next: Option<TaskId>,
}

pub struct CancelTask {
    pub id: TaskId,
    pub now: Timestamp,
}

pub struct Cancelled {
    pub task: Task,
    pub effect: Cancellation,
}

pub struct RetryTask {
    pub id: TaskId,
    pub now: Timestamp,
}

pub struct FetchTasks {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub limit: u32,
    /// When nothing is ready, how long to wait for tasks to arrive before answering empty.
    pub wait: Duration,
    pub now: Timestamp,
    /// Tasks the worker has finished whose outcomes are on their way: what they hold counts as
    /// free on the worker (see `FetchRequest::finished`).
    pub finished: Vec<TaskId>,
}

pub struct Heartbeat {
    /// The worker that says it holds these leases: a lease held by another worker answers
    /// `lease_lost`. `None` for a single-lease call, whose caller the server checked.
    pub worker_id: Option<String>,
    pub leases: Vec<HeldLease>,
    pub now: Timestamp,
}

pub struct ReportOutcomes {
    /// The worker reporting: a report about a lease another worker holds changes nothing and
    /// yields `LeaseLost`. `None` for a single-lease call, whose caller the server checked.
    pub worker_id: Option<String>,
    pub reports: Vec<Report>,
    pub now: Timestamp,
}

pub struct ExpireLeases {
    pub now: Timestamp,
    pub limit: u32,
}

pub struct PromoteDue {
    pub now: Timestamp,
    pub limit: u32,
}

pub struct Promoted {
    pub promoted: usize,
    /// When the next scheduled task falls due, if any is left.
    pub next_due: Option<Timestamp>,
}

/// Deletes idempotency keys created before `keys_before`, at most `limit` of them.
pub struct PruneExpired {
    pub keys_before: Timestamp,
    /// Workers last heard from before this, holding no running task and registered without a
    /// token, are forgotten.
    pub workers_before: Timestamp,
    pub limit: u32,
}

pub struct RegisterWorker {
    pub name: String,
    /// The id of the token that registered the worker: only that token may fetch, heartbeat and
    /// report as this worker. `None` on a server without tokens.
    pub owner: Option<String>,
    pub queues: Vec<String>,
    pub concurrency: u32,
    pub capacity: Resources,
    pub labels: Labels,
    /// The kinds it has handlers for; empty: it did not say, and is leased any kind.
    pub kinds: Vec<String>,
    /// JSON Schemas (as JSON text) for the payloads of some of those kinds; each replaces the
    /// kind's schema in force.
    pub schemas: std::collections::BTreeMap<String, String>,
    pub now: Timestamp,
}

/// The JSON Schema in force for a kind's payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSchema {
    pub kind: String,
    /// The schema, as JSON text.
    pub schema: String,
    pub registered_at: Timestamp,
}

/// What a store's subscribers can wait for. Each topic is a counter that moves on after a commit
/// that changed it, so a waiter that reads the counter before looking and waits for a change after
/// finding nothing never misses an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Tasks became ready to lease.
    Ready,
    /// Tasks were scheduled for later (the promoter may need to wake sooner).
    Scheduled,
    /// Tasks reached a terminal state.
    Finished,
}

impl Topic {
    /// The topic a task's new state concerns, if any.
    pub(crate) fn of(state: TaskState) -> Option<Topic> {
        match state {
            TaskState::Ready => Some(Topic::Ready),
            TaskState::Scheduled => Some(Topic::Scheduled),
            s if s.is_terminal() => Some(Topic::Finished),
            _ => None,
        }
    }
}

pub struct SubmitWorkflow {
    pub plan: WorkflowPlan,
    pub now: Timestamp,
}

pub struct CancelWorkflow {
    pub id: TaskId,
    pub now: Timestamp,
}

/// Runs a decided workflow's failed and cancelled tasks again, and what is downstream of them;
/// see [`crate::Store::retry_workflow`].
pub struct RetryWorkflow {
    pub id: TaskId,
    pub now: Timestamp,
}

/// A page of a task's parents' outcomes, in node order.
pub struct ListParents {
    pub task_id: TaskId,
    /// Return parents whose node id sorts after this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// A running task fans out: its lease must be current.
pub struct FanOutTasks {
    pub task_id: TaskId,
    pub lease: LeaseToken,
    pub plan: FanOutPlan,
    pub now: Timestamp,
}

/// Deletes finished work that ended before `finished_before`, at most `limit` tasks a call: plain
/// tasks in a terminal state, and decided workflows with all their tasks.
pub struct PruneFinished {
    pub finished_before: Timestamp,
    pub limit: u32,
}

/// Takes or renews the lease `name` for `holder` until `now + ttl`, unless another holder's lease
/// is still live. A holder gives the lease up early with a zero `ttl`.
pub struct AcquireLease {
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    pub now: Timestamp,
}

/// Forgets a lost worker (`Store::remove_worker`).
pub struct RemoveWorker {
    pub id: String,
    /// A worker last seen before this is lost; one seen since is live and stays.
    pub lost_before: Timestamp,
}

/// Who holds a named lease after an [`AcquireLease`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub expires_at: Timestamp,
}

/// Changes a queue's settings; `None` leaves one as it is. A paused queue leases nothing (its
/// tasks wait); a queue's weight is its share when a worker serves several queues.
pub struct UpdateQueue {
    pub queue: String,
    pub paused: Option<bool>,
    pub weight: Option<u32>,
    /// Replaces the queue's limits.
    pub limits: Option<QueueLimits>,
    pub now: Timestamp,
}

/// A queue's settings as stored.
#[derive(Clone, Debug)]
pub(crate) struct QueueSettings {
    pub name: String,
    pub paused: bool,
    pub weight: u32,
    pub limits: QueueLimits,
}

/// Ready tasks that ask something of their worker, grouped by queue and needs: what
/// "unschedulable" is worked out from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyNeeds {
    pub queue: String,
    pub needs: Needs,
    pub count: u64,
}

/// How many ready tasks of one kind a queue holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyKind {
    pub queue: String,
    pub kind: String,
    pub count: u64,
}

/// Creates a cron schedule; `Conflict` if the name is taken.
pub struct CreateCron {
    pub spec: CronSpec,
    /// Its first tick.
    pub next_run: Timestamp,
    pub now: Timestamp,
}

/// Pauses or resumes a schedule. A resumed schedule goes on from `next_run` (its next tick from
/// now): ticks while paused never fire.
/// Replaces a schedule's spec (same name) and its next tick.
pub struct UpdateCron {
    pub spec: CronSpec,
    pub next_run: Timestamp,
}

pub struct PauseCron {
    pub name: String,
    pub paused: bool,
    pub next_run: Timestamp,
}

/// Records that a schedule fired `tasks` and moves it on to `next_run`, if it still stands at
/// `expected_next_run`; otherwise (another node fired it first) changes nothing and says false.
pub struct FireCron {
    pub name: String,
    pub expected_next_run: Timestamp,
    /// `None` when the schedule has no tick left.
    pub next_run: Option<Timestamp>,
    /// One per tick, keyed by [`CronSpec::tick_key`].
    pub tasks: Vec<NewTask>,
    pub idempotency_window: Duration,
    pub now: Timestamp,
}

/// Revokes a token by its id, or by the name of the live token that has it.
pub struct RevokeToken {
    pub token: String,
    pub now: Timestamp,
}

/// When tokens were last used, written now and then rather than on every request.
pub struct TouchTokens {
    pub used: Vec<(String, Timestamp)>,
}

/// The audit log from `since`, oldest first.
pub struct ListAudit {
    pub since: Timestamp,
    pub limit: u32,
}

/// The event log after `after`, oldest first: at most `limit` events. On PostgreSQL, only what
/// no transaction still running can precede (see [`taskwarden_core::events::EventId`]).
pub struct ReadEvents {
    pub after: taskwarden_core::events::EventId,
    pub limit: u32,
}

/// A task's log lines after `after` (a `seq`), oldest first.
pub struct ReadTaskLogs {
    pub task_id: TaskId,
    pub after: u64,
    pub limit: u32,
}

/// Adds rolled-up rows to the per-minute history and moves the roll-up's position from `from` to
/// `to`, in one transaction, if the position is still `from` (`Conflict` otherwise, adding
/// nothing: another node rolled the same events up first).
pub struct AddStats {
    pub rows: Vec<taskwarden_core::stats::StatsRow>,
    pub from: taskwarden_core::events::EventId,
    pub to: taskwarden_core::events::EventId,
}

/// The per-minute history from `since` to before `until`, by minute then queue; one queue's, or
/// every queue's.
pub struct ReadStats {
    pub queue: Option<String>,
    pub since: Timestamp,
    pub until: Timestamp,
    pub limit: u32,
}

/// An endpoint's delivery log, newest first.
pub struct ListDeliveries {
    pub webhook: String,
    pub limit: u32,
}

/// Deletes events older than `before`, the oldest first, about `limit` of them: a store that
/// keeps events in pages deletes whole pages, so it may take a few more.
pub struct PruneEvents {
    pub before: Timestamp,
    pub limit: u32,
}

/// Workflows newest first, filtered by state and name.
pub struct ListWorkflows {
    pub state: Option<taskwarden_core::workflow::WorkflowState>,
    pub name: Option<String>,
    /// Return workflows older than this one.
    pub before: Option<TaskId>,
    pub limit: u32,
}

pub struct WorkflowPage {
    pub workflows: Vec<taskwarden_core::workflow::WorkflowSummary>,
    /// The cursor for the next page, when there may be one.
    pub next: Option<TaskId>,
}
