//! What a handler sees (its [`TaskContext`]) and what it may answer ([`TaskError`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use taskwarden_core::task_logs::LogLine;
use taskwarden_core::{Progress, TaskId};
use tokio_util::sync::CancellationToken;

/// How a handler's attempt ends when it does not succeed.
///
/// Any error type converts into [`TaskError::Retry`] with `?`, so a handler retries transient
/// failures by default and chooses [`TaskError::fail`] for a permanent one.
pub enum TaskError {
    /// Try again: after `after` if given, else per the task's backoff policy. Once the task's
    /// attempts are spent it fails.
    Retry { message: String, after: Option<Duration> },
    /// Do not retry: the task fails now and is kept as a dead letter.
    Fail { message: String },
    /// The handler stopped because the task was cancelled.
    Cancelled,
}

impl TaskError {
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError::Retry { message: message.into(), after: None }
    }

    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        TaskError::Retry { message: message.into(), after: Some(after) }
    }

    pub fn fail(message: impl Into<String>) -> Self {
        TaskError::Fail { message: message.into() }
    }
}

impl std::fmt::Debug for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Retry { message, after } => write!(f, "Retry({message:?}, after {after:?})"),
            TaskError::Fail { message } => write!(f, "Fail({message:?})"),
            TaskError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::retry(e.to_string())
    }
}

/// What a running handler said that has not reached the server yet: its latest progress and the
/// lines it logged, to ride on the next heartbeat (or, for the lines, the report).
#[derive(Default)]
pub(crate) struct Notes {
    pub progress: Option<Progress>,
    pub logs: Vec<LogLine>,
}

/// Most lines kept per task between two heartbeats: a handler logging in a tight loop cannot
/// grow the worker's memory without bound (the server keeps 1,000 per attempt anyway).
const MAX_UNSENT_LINES: usize = 1000;

/// [`Notes`] by task.
pub(crate) type NotesBoard = Arc<Mutex<HashMap<TaskId, Notes>>>;

/// What a running handler knows about its task, and its ways to talk back.
#[derive(Clone)]
pub struct TaskContext {
    pub id: TaskId,
    pub kind: String,
    pub queue: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// For a workflow task: how many parents it has; see [`TaskContext::parents`].
    pub parent_count: u32,
    cancel: CancellationToken,
    notes: NotesBoard,
    client: taskwarden_client::Client,
    lease: taskwarden_core::LeaseToken,
    pub(crate) traceparent: Option<taskwarden_core::TraceParent>,
}

impl TaskContext {
    pub(crate) fn new(
        task: &taskwarden_core::protocol::LeasedTask,
        cancel: CancellationToken,
        notes: NotesBoard,
        client: taskwarden_client::Client,
    ) -> Self {
        TaskContext {
            id: task.id,
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            parent_count: task.parent_count,
            cancel,
            notes,
            client,
            lease: task.lease,
            traceparent: task.traceparent,
        }
    }

    /// The W3C trace context this attempt runs in (its run span when the worker makes them, see
    /// [`Worker::traces`](crate::Worker::traces), else the one it was submitted in), to pass on
    /// as a `traceparent` header to what the handler calls. With run spans, the handler also runs
    /// with its run span as OpenTelemetry's current context.
    pub fn traceparent(&self) -> Option<taskwarden_core::TraceParent> {
        self.traceparent
    }

    /// Fans out: `children` run in parallel; `join` runs once all of them finished and reads their
    /// outcomes in child order (see [`TaskContext::parents_page`]). Whatever waited for this task
    /// now waits for the join, whose result stands in for this task's. Leave `id` and `depends_on`
    /// empty: children are named `this-node/000000`, ... and the join `this-node/join`. Calling it
    /// again (say, on a retried attempt) returns the fan-out made the first time.
    pub async fn fan_out(
        &self,
        children: Vec<taskwarden_client::NodeSpec>,
        join: taskwarden_client::NodeSpec,
    ) -> Result<taskwarden_client::FanOut, TaskError> {
        self.fan_out_with_policy(children, join, None).await
    }

    /// Like [`TaskContext::fan_out`], with the fan-out's own failure policy: `Collect` (the join
    /// sees every child's success or error), `Quorum` (the join runs as soon as enough children
    /// succeeded; the rest are cancelled) or `FailFast` (a failed child cancels its siblings and
    /// the join). With `None` the workflow's policy applies to the children.
    pub async fn fan_out_with_policy(
        &self,
        children: Vec<taskwarden_client::NodeSpec>,
        join: taskwarden_client::NodeSpec,
        failure_policy: Option<taskwarden_client::FailurePolicy>,
    ) -> Result<taskwarden_client::FanOut, TaskError> {
        let req = taskwarden_client::FanOutRequest {
            lease: self.lease,
            children,
            join,
            failure_policy,
            traceparent: self.traceparent,
        };
        self.client.fan_out(self.id, &req).await.map_err(|e| match e.status() {
            Some(400) => TaskError::fail(format!("fan-out refused: {e}")),
            _ => TaskError::retry(format!("fan-out failed: {e}")),
        })
    }

    /// The outcomes of this workflow task's parents, in node order (empty for a plain task).
    /// Reads them a page at a time; for a join over a large fan-out, prefer
    /// [`TaskContext::parents_page`] to keep memory flat.
    pub async fn parents(&self) -> Result<Vec<taskwarden_client::ParentResult>, TaskError> {
        let mut all = Vec::with_capacity(self.parent_count as usize);
        let mut after: Option<String> = None;
        while (all.len() as u32) < self.parent_count {
            let page = self.parents_page(after.as_deref(), 1000).await?;
            all.extend(page.parents);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(all)
    }

    /// One page of the parents' outcomes, after node `after`.
    pub async fn parents_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<taskwarden_client::ParentList, TaskError> {
        self.client.parents(self.id, after, limit).await.map_err(|e| TaskError::retry(format!("reading parents: {e}")))
    }

    /// Fires when the task is cancelled, its lease is lost, its timeout passes or the worker shuts
    /// down past its grace period. A handler doing long work should select on it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Records progress (`fraction` from 0 to 1); it reaches the server with the next heartbeat.
    pub fn progress(&self, fraction: f64, message: impl Into<Option<String>>) {
        let p = Progress { fraction: fraction.clamp(0.0, 1.0), message: message.into() };
        self.notes.lock().expect("notes lock").entry(self.id).or_default().progress = Some(p);
    }

    /// Logs a line to this task's log (read with `taskwarden task logs ID`, or
    /// `GET /v1/tasks/{id}/logs`): it reaches the server with the next heartbeat, or with the
    /// attempt's outcome. Dated now, by this machine's clock.
    pub fn log(&self, line: impl Into<String>) {
        let at = taskwarden_core::Timestamp::from_system_time(std::time::SystemTime::now());
        let mut notes = self.notes.lock().expect("notes lock");
        let logs = &mut notes.entry(self.id).or_default().logs;
        if logs.len() < MAX_UNSENT_LINES {
            logs.push(LogLine { at: Some(at), line: line.into() });
        }
    }
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, TaskError>> + Send>>;

/// A handler with its payload and result types erased.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, ctx: TaskContext, payload: Box<RawValue>) -> HandlerFuture;
}

pub(crate) struct TypedHandler<F, P, R> {
    f: F,
    _types: std::marker::PhantomData<fn(P) -> R>,
}

impl<F, P, R> TypedHandler<F, P, R> {
    pub fn new(f: F) -> Self {
        TypedHandler { f, _types: std::marker::PhantomData }
    }
}

impl<F, Fut, P, R> ErasedHandler for TypedHandler<F, P, R>
where
    F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    P: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    fn call(&self, ctx: TaskContext, payload: Box<RawValue>) -> HandlerFuture {
        let payload: P = match serde_json::from_str(payload.get()) {
            Ok(p) => p,
            // A payload the handler cannot read will not get better on a retry.
            Err(e) => return Box::pin(async move { Err(TaskError::fail(format!("invalid payload: {e}"))) }),
        };
        let fut = (self.f)(ctx, payload);
        Box::pin(async move {
            let result = fut.await?;
            serde_json::value::to_raw_value(&result)
                .map_err(|e| TaskError::fail(format!("result does not serialize: {e}")))
        })
    }
}
