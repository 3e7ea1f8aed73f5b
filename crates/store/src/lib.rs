//! Taskwarden's storage seam.
//!
//! - [`Store`]: the one trait every backend implements. Methods take a parameter struct from
//!   [`params`] and return the core's types; rows, SQL and driver errors stay inside the backend.
//! - [`StoreError`]: errors as callers match them, the same on every backend.
//! - [`SqliteStore`]: the embedded backend (one file, WAL, group commit).
//! - [`PgStore`]: PostgreSQL, shared by several server nodes.
//! - `conformance` (feature `conformance`): the suite every backend must pass unchanged.

mod admission;
mod error;
mod list_query;
pub mod params;
mod postgres;
pub mod queue_stats;
mod sqlite;
mod topics;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod pg_testing;

use async_trait::async_trait;
use taskwarden_core::auth::{AuditEntry, TokenRecord};
use taskwarden_core::cron::CronInfo;
use taskwarden_core::events::{Event, EventId, StoredEvent};
use taskwarden_core::protocol::{LeaseStatus, QueueInfo, WorkerInfo};
use taskwarden_core::workflow::{FanOut, ParentResult, Workflow, WorkflowState};
use taskwarden_core::{Task, TaskId, Timestamp};
use tokio::sync::watch;

pub use error::{Result, StoreError};
pub use params::*;
#[cfg(feature = "conformance")]
pub use postgres::plans as pg_plans;
pub use postgres::{PgConfig, PgStore};

/// The default aging step: a ready task gains one priority level per this much waiting.
/// Why `remove_worker` refused a worker it knows.
pub(crate) const NOT_REMOVABLE: &str =
    "the worker is live or still holds a running task: only a lost worker holding none can be removed";

pub const DEFAULT_AGING: std::time::Duration = std::time::Duration::from_secs(10);
pub use sqlite::{BackupReport, Durability, SqliteConfig, SqliteStore};

/// Durable task storage. Every method that changes state applies the core's transitions, so all
/// backends enforce the same lifecycle.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts tasks atomically (honouring idempotency keys) and returns them in request order.
    /// Returns only once the tasks are durably committed.
    async fn submit(&self, p: SubmitTasks) -> Result<Vec<Submitted>>;

    /// One task with its attempt history.
    async fn get(&self, id: TaskId) -> Result<Task>;

    async fn list(&self, p: ListTasks) -> Result<TaskPage>;

    async fn cancel(&self, p: CancelTask) -> Result<Cancelled>;

    async fn retry(&self, p: RetryTask) -> Result<Task>;

    /// Leases up to `limit` ready tasks from the given queues (skipping paused ones): within a
    /// queue highest priority first, then oldest; across several, by the queues' weights.
    /// When none is ready, waits up to `wait` and answers as soon as tasks are leased to this
    /// caller; an empty answer means the wait ran out.
    async fn fetch(&self, p: FetchTasks) -> Result<Vec<Task>>;

    /// Extends the leases a worker holds; reports for each whether it is still held and whether
    /// the task was cancelled.
    async fn heartbeat(&self, p: Heartbeat) -> Result<Vec<LeaseStatus>>;

    /// Applies workers' reports (completions, failures, releases). Each report succeeds or fails
    /// on its own; a report with a stale lease changes nothing and yields `LeaseLost`.
    async fn report(&self, p: ReportOutcomes) -> Result<Vec<Result<Task>>>;

    /// Ends every running attempt whose lease has expired, retrying or dead-lettering its task.
    /// Returns how many leases expired.
    async fn expire_leases(&self, p: ExpireLeases) -> Result<usize>;

    /// Drops scheduled and ready tasks whose `expires_at` has come, as `expired`. Returns how
    /// many. (A fetch never starts such a task either: it expires it instead.)
    async fn expire_unstarted(&self, p: ExpireLeases) -> Result<usize>;

    /// Moves scheduled tasks whose time has come to ready.
    async fn promote_due(&self, p: PromoteDue) -> Result<Promoted>;

    /// Forgets expired idempotency keys, so their table stays as small as the window. Returns how
    /// many were deleted.
    async fn prune_expired(&self, p: PruneExpired) -> Result<usize>;

    /// Deletes finished tasks and decided workflows past their retention, a batch at a time.
    /// Returns how many tasks were deleted.
    async fn prune_finished(&self, p: PruneFinished) -> Result<usize>;

    /// Lets the database reuse the space of deleted and superseded rows, so a long run stays the
    /// size of its retention window. PostgreSQL: a `VACUUM (ANALYZE)` of the task tables, which
    /// keeps them bounded even where autovacuum is off or slow; SQLite reuses freed pages by
    /// itself, so nothing. Changes no data.
    async fn compact(&self) -> Result<()>;

    /// Takes or renews a named lease held in the database (the leader lease that decides which
    /// server node runs the background loops). Returns the holder after the call: the caller holds
    /// the lease when that is its own name.
    async fn acquire_lease(&self, p: AcquireLease) -> Result<LeaseHolder>;

    async fn register_worker(&self, p: RegisterWorker) -> Result<WorkerInfo>;

    /// Pauses or resumes a queue (known or not yet), or sets its weight. Resuming wakes waiting
    /// fetchers. A fetch from several queues takes from them in proportion to their weights.
    async fn update_queue(&self, p: UpdateQueue) -> Result<()>;

    /// Every queue that holds unfinished or dead-lettered tasks, has settings of its own, or had
    /// a task finish within [`queue_stats::LISTED_AFTER_ACTIVITY`], with its counts at `now`, by
    /// name.
    async fn list_queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>>;

    /// What each queue holds now: [`Store::list_queues`] without the last hour's activity, so
    /// `succeeded_last_minute` is 0 and a queue is listed only while it holds tasks or has
    /// settings. It reads only the counted states' partial indexes, where `list_queues` also
    /// reads every task that finished in the last hour: for `/metrics`, scraped every few
    /// seconds.
    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueInfo>>;

    /// Forgets a queue's settings (pause, weight, limits); `NotFound` if it has none. Its tasks,
    /// if any, stay where they are and run under the defaults.
    async fn remove_queue(&self, name: &str) -> Result<()>;

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Forgets a lost worker that holds no running task (an operator clearing the workers
    /// page). `NotFound` for an unknown worker; `Conflict` for one seen since `lost_before` or
    /// still holding a task (its lease expiry comes first).
    async fn remove_worker(&self, p: RemoveWorker) -> Result<()>;

    /// The id of the token that registered the worker (`None` when it registered on a server
    /// without tokens); `NotFound` for a worker that never registered.
    async fn worker_owner(&self, worker_id: &str) -> Result<Option<String>>;

    /// Stores a new token (only its hash); `Conflict` if a live token has its name or id.
    async fn create_token(&self, token: TokenRecord) -> Result<TokenRecord>;

    /// Every token ever created, revoked and expired ones too, by creation.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Marks a token revoked (by id, or by a live token's name); `NotFound` if there is none.
    /// Revoking a revoked token changes nothing.
    async fn revoke_token(&self, p: RevokeToken) -> Result<TokenRecord>;

    /// Records when tokens were last used.
    async fn touch_tokens(&self, p: TouchTokens) -> Result<()>;

    /// Appends to the audit log.
    async fn record_audit(&self, entries: Vec<AuditEntry>) -> Result<()>;

    async fn list_audit(&self, p: ListAudit) -> Result<Vec<AuditEntry>>;

    /// Forgets audit entries older than `before`; returns how many.
    async fn prune_audit(&self, before: Timestamp) -> Result<usize>;

    /// Events in the log after `p.after`, oldest first. Every state change a store method makes
    /// appends its event in the same transaction, so a change that committed has its event and
    /// one that rolled back has none; ids increase in the order readers may rely on (see
    /// [`taskwarden_core::events::EventId`]).
    async fn read_events(&self, p: ReadEvents) -> Result<Vec<Event>>;

    /// The same events as [`Store::read_events`], each as the JSON it was stored as: what a
    /// stream sends on without parsing it. By default, the parsed events serialized again.
    async fn read_stored_events(&self, p: ReadEvents) -> Result<Vec<StoredEvent>> {
        Ok(self.read_events(p).await?.iter().map(StoredEvent::of).collect())
    }

    /// The same events as [`Store::read_events`], with only what the per-minute roll-up takes
    /// of each (the two numbers of `data` it sums are picked out by the database), or of a run
    /// of them summed already ([`Measured::Summed`](taskwarden_core::stats::Measured)); at most
    /// `p.limit` items.
    async fn read_event_measures(&self, p: ReadEvents) -> Result<Vec<taskwarden_core::stats::Measured>>;

    /// The id of the last event a reader can see now ([`EventId::START`] when there is none):
    /// reading after it yields only what happens from now on.
    async fn last_event_id(&self) -> Result<EventId>;

    /// At a graceful shutdown, once nothing else will write: puts in order what the store keeps
    /// in memory for speed, so the next open has nothing to recover (SQLite: the events waiting
    /// in task rows go into a page). Writes after it still work, only without that shortcut.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Deletes the oldest events written before `p.before`, a batch at a time; returns how many.
    /// The newest event is always kept (so ids, on SQLite, never start again from a smaller one).
    async fn prune_events(&self, p: PruneEvents) -> Result<usize>;

    /// Where the per-minute history's roll-up of the event log stands: it has taken in every
    /// event up to this one ([`EventId::START`] at first).
    async fn stats_position(&self) -> Result<EventId>;

    /// Adds rows to the per-minute history and moves the roll-up on; see [`AddStats`].
    async fn add_stats(&self, p: AddStats) -> Result<()>;

    async fn read_stats(&self, p: ReadStats) -> Result<Vec<taskwarden_core::stats::StatsRow>>;

    /// Forgets the history's minutes before `before`; returns how many rows went.
    async fn prune_stats(&self, before: Timestamp) -> Result<usize>;

    /// Stores a new webhook endpoint; `Conflict` if one has its name.
    async fn create_webhook(&self, w: taskwarden_core::webhooks::Webhook) -> Result<()>;

    /// Every endpoint, by name.
    async fn list_webhooks(&self) -> Result<Vec<taskwarden_core::webhooks::Webhook>>;

    /// Writes back an endpoint (its position, failures, state); `NotFound` if it was deleted.
    /// With `if_position`, only if its stored position is still that (`Conflict` otherwise: a
    /// replay moved it meanwhile).
    async fn save_webhook(&self, w: taskwarden_core::webhooks::Webhook, if_position: Option<EventId>) -> Result<()>;

    /// Deletes an endpoint and its delivery log; `NotFound` if there is none by the name.
    async fn delete_webhook(&self, name: &str) -> Result<()>;

    /// Appends to an endpoint's delivery log.
    async fn record_delivery(&self, d: taskwarden_core::webhooks::Delivery) -> Result<()>;

    async fn list_deliveries(&self, p: ListDeliveries) -> Result<Vec<taskwarden_core::webhooks::Delivery>>;

    /// Forgets deliveries older than `before`; returns how many.
    async fn prune_deliveries(&self, before: Timestamp) -> Result<usize>;

    /// A task's log lines (every attempt's) after `p.after`, oldest first. Lines arrive with the
    /// heartbeats and reports that carry them (`HeldLease::logs`, `Report::logs`), appended only
    /// when that heartbeat or report holds the current lease, within the caps of
    /// [`taskwarden_core::task_logs`]; they are deleted with the task.
    async fn task_logs(&self, p: ReadTaskLogs) -> Result<Vec<taskwarden_core::task_logs::TaskLogLine>>;

    /// Ready tasks that ask for resources or labels, grouped by queue and needs.
    async fn ready_needs(&self) -> Result<Vec<ReadyNeeds>>;

    /// Ready tasks counted by queue and kind (at most 10,000 groups), for telling how many no
    /// live worker has a handler for.
    async fn ready_kinds(&self) -> Result<Vec<ReadyKind>>;

    /// The JSON Schema in force for each kind that has one, by kind.
    async fn kind_schemas(&self) -> Result<Vec<KindSchema>>;

    /// Creates a cron schedule; `Conflict` if one has the name.
    async fn create_cron(&self, p: CreateCron) -> Result<CronInfo>;

    async fn list_crons(&self) -> Result<Vec<CronInfo>>;

    /// Pauses or resumes a schedule; `NotFound` if there is none by the name.
    async fn pause_cron(&self, p: PauseCron) -> Result<CronInfo>;

    /// Replaces a schedule's spec and next tick, paused or not as it was; `NotFound` if there is
    /// none by the name.
    async fn update_cron(&self, p: UpdateCron) -> Result<CronInfo>;

    /// Deletes a schedule (tasks it submitted stay); `NotFound` if there is none by the name.
    async fn delete_cron(&self, name: &str) -> Result<()>;

    /// Submits a schedule's due ticks and moves it on, in one transaction, if no one did first.
    async fn fire_cron(&self, p: FireCron) -> Result<bool>;

    /// Stores a workflow's tasks and edges atomically; tasks without parents are ready at once.
    async fn submit_workflow(&self, p: SubmitWorkflow) -> Result<Workflow>;

    /// A workflow with its nodes and speedup report.
    async fn get_workflow(&self, id: TaskId) -> Result<Workflow>;

    /// Workflows newest first, by state and name, a page at a time.
    async fn list_workflows(&self, p: ListWorkflows) -> Result<WorkflowPage>;

    /// Just the workflow's state: cheap enough to check on every wake-up while waiting.
    async fn workflow_state(&self, id: TaskId) -> Result<WorkflowState>;

    /// Cancels every unfinished task of the workflow (running ones are asked to stop).
    async fn cancel_workflow(&self, p: CancelWorkflow) -> Result<Workflow>;

    /// Runs a decided (failed or cancelled) workflow's failed and cancelled tasks again, with
    /// everything downstream of them, keeping what succeeded (see
    /// [`taskwarden_core::workflow::plan_retry`]), and makes the workflow running again, in one
    /// transaction. `NotFound` for an unknown id; `Conflict` for a workflow that is running,
    /// succeeded, still has tasks stopping, or has nothing to run again.
    async fn retry_workflow(&self, p: RetryWorkflow) -> Result<Workflow>;

    /// Adds children and a join to a running task's workflow (making the task the root of a new
    /// workflow if it is in none). Idempotent per task: a retried task that fans out again gets
    /// the fan-out it made the first time.
    async fn fan_out(&self, p: FanOutTasks) -> Result<FanOut>;

    /// The outcomes of a workflow task's parents, a page at a time.
    async fn parents(&self, p: ListParents) -> Result<Vec<ParentResult>>;

    /// A counter that moves on whenever `topic` happens; see [`Topic`].
    fn subscribe(&self, topic: Topic) -> watch::Receiver<u64>;

    /// Whether the store can serve requests now: it can commit (not merely read).
    async fn ready(&self) -> Result<()>;

    /// The database's own clock, for a store that nodes on several machines share (every node
    /// then runs on this one clock: see the server's `clock` module); `None` for a store that
    /// keeps no time of its own.
    async fn database_time(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }
}
