//! Taskwarden's Rust client SDK: submit tasks and collect their results over the HTTP API.
//!
//! ```no_run
//! # async fn run() -> Result<(), taskwarden_client::ClientError> {
//! use std::time::Duration;
//! use taskwarden_client::{Client, SubmitTask, SubmitTaskExt};
//!
//! let client = Client::new("http://127.0.0.1:7433")?;
//! let task = client.submit(SubmitTask::new("default", "echo").payload(&serde_json::json!({"hello": "world"}))?).await?;
//! let done = client.wait(task.id, Duration::from_secs(30)).await?;
//! println!("{} -> {:?}", done.state, done.result);
//! # Ok(()) }
//! ```
//!
//! The worker-side calls (`register`, `fetch`, `heartbeat`, `report`) are used by the worker SDK;
//! most users want `taskwarden-worker` for those.
//!
//! For a deployment of several server nodes, give every node's URL, comma-separated
//! (`Client::new("http://a:7433,http://b:7433")`); see [`Client`] for how it fails over.
//!
//! A server with authentication on wants a token, and one serving HTTPS with its own certificate
//! authority wants that CA: see [`ClientOptions`] (or [`ClientOptions::from_env`], which reads
//! `TASKWARDEN_TOKEN` and `TASKWARDEN_CA_CERT`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use taskwarden_core::auth::{AuditEntry, AuditList, CreateTokenCall, CreatedToken, TokenInfo, TokenList};
pub use taskwarden_core::cron::CronChange;
use taskwarden_core::cron::{CronInfo, CronList, CronSpec};
pub use taskwarden_core::protocol::ParentList;
pub use taskwarden_core::protocol::{
    BulkFilter, BulkResult, FetchResponse, KindInfo, LeaseStatus, LeasedTask, Outcome, QueueInfo, ReportResult,
    SubmitTask,
};
use taskwarden_core::protocol::{
    ErrorBody, FetchRequest, HeldLease, KindList, QueueList, QueueUpdate, RegisterWorker, Report, ReportBatch,
    ReportBatchResponse, SubmitBatch, TaskList, WorkerHeartbeat, WorkerHeartbeatResponse, WorkerInfo, WorkerList,
};
pub use taskwarden_core::workflow::{
    FailurePolicy, FanOut, FanOutRequest, NodeSpec, ParentResult, Workflow, WorkflowList, WorkflowNode, WorkflowSpec,
    WorkflowState, WorkflowSummary,
};
pub use taskwarden_core::{Backoff, Task, TaskId, TaskState};
use thiserror::Error;

/// An error from the server (with its code and, for bad input, the field) or from the transport.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("{status}: {message}{}", field.as_ref().map(|f| format!(" (field: {f})")).unwrap_or_default())]
    Api { status: u16, code: String, message: String, field: Option<String> },
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("timed out waiting for task {0}")]
    WaitTimeout(TaskId),
}

impl ClientError {
    /// The server's error code (`not_found`, `lease_lost`, `invalid_request`, ...), if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request surely did not run: the server could not be reached, or refused it
    /// as unavailable (503). Such a request is safe to send to another node.
    pub fn never_ran(&self) -> bool {
        match self {
            ClientError::Transport(e) => e.is_connect(),
            ClientError::Api { status, .. } => *status == 503,
            _ => false,
        }
    }

    /// True when the server refused a worker call because the lease is no longer held.
    pub fn is_lease_lost(&self) -> bool {
        self.code() == Some("lease_lost")
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Builders for [`SubmitTask`], so a request reads as one expression.
pub trait SubmitTaskExt: Sized {
    fn new(queue: impl Into<String>, kind: impl Into<String>) -> Self;
    fn payload<T: Serialize>(self, payload: &T) -> Result<Self>;
    fn priority(self, priority: i32) -> Self;
    fn delay(self, delay: Duration) -> Self;
    fn max_attempts(self, n: u32) -> Self;
    fn timeout(self, timeout: Duration) -> Self;
    fn idempotency_key(self, key: impl Into<String>) -> Self;
    fn tags(self, tags: Vec<String>) -> Self;
}

impl SubmitTaskExt for SubmitTask {
    fn new(queue: impl Into<String>, kind: impl Into<String>) -> Self {
        SubmitTask { queue: queue.into(), kind: kind.into(), ..Default::default() }
    }
    fn payload<T: Serialize>(mut self, payload: &T) -> Result<Self> {
        self.payload = Some(to_raw(payload)?);
        Ok(self)
    }
    fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
    fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }
    fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
    fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    fn tags(mut self, tags: Vec<String>) -> Self {
        self.tags = Some(tags);
        self
    }
}

/// Serializes a value into a raw JSON payload.
/// `?create=true` when asked to set up a queue nobody has used yet.
fn create_query(create: bool) -> &'static str {
    if create { "?create=true" } else { "" }
}

pub fn to_raw<T: Serialize>(value: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| ClientError::Invalid(format!("payload: {e}")))
}

/// Filters for [`Client::workflows`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkflowListOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkflowState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Filters for [`Client::list`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ListOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A search in the query language (`payload.customer_id=42 error:timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

pub use taskwarden_core::protocol::TaskList as TaskPage;

/// A handle on a Taskwarden deployment: one server, or several nodes sharing one database.
/// Cheap to clone; clones share a connection pool and the choice of node.
///
/// With several URLs the client talks to one node at a time and fails over to the next when a
/// node cannot be reached or answers 503 (its database is down, or it is shutting down): such a
/// request never ran, so it is sent again to the next node at once. A request that failed after
/// it was sent (a timeout, a connection reset) is not resent, since it may have taken effect;
/// the error is returned and the next call goes to the next node.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<[String]>,
    /// Index into `bases` of the node in use.
    current: Arc<AtomicUsize>,
    /// Sent as `Authorization: Bearer ...` on every call.
    token: Option<Arc<str>>,
}

/// How a client proves who it is and whom it trusts.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// An API token (`tw_...`), sent on every request.
    pub token: Option<String>,
    /// A PEM certificate authority to trust for `https://` servers, beside the system's roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// A PEM client certificate followed by its private key, for servers that ask for one
    /// (mutual TLS).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(Vec::len))
            .field("identity_pem", &self.identity_pem.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ClientOptions {
    /// Options from the environment: `TASKWARDEN_TOKEN`, and `TASKWARDEN_CA_CERT` (a PEM file's
    /// path).
    pub fn from_env() -> Result<ClientOptions> {
        let token = std::env::var("TASKWARDEN_TOKEN").ok().filter(|t| !t.is_empty());
        let ca_cert_pem = match std::env::var("TASKWARDEN_CA_CERT").ok().filter(|p| !p.is_empty()) {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|e| ClientError::Invalid(format!("cannot read TASKWARDEN_CA_CERT {path:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(ClientOptions { token, ca_cert_pem, identity_pem: None })
    }
}

impl Client {
    /// A client for the server at `url`, such as `http://127.0.0.1:7433`, or for several nodes
    /// given comma-separated: `http://10.0.0.1:7433,http://10.0.0.2:7433`.
    pub fn new(url: &str) -> Result<Client> {
        Client::with_options(url, ClientOptions::default())
    }

    /// [`Client::new`] with a token and TLS settings.
    pub fn with_options(url: &str, options: ClientOptions) -> Result<Client> {
        Client::connect(url.split(',').map(str::trim).filter(|u| !u.is_empty()), options)
    }

    /// A client for several nodes of one deployment, tried in order.
    pub fn with_urls<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Result<Client> {
        Client::connect(urls, ClientOptions::default())
    }

    fn connect<S: AsRef<str>>(urls: impl IntoIterator<Item = S>, options: ClientOptions) -> Result<Client> {
        install_tls_provider();
        let mut bases = Vec::new();
        for url in urls {
            let url = url.as_ref();
            let base = url.trim_end_matches('/').to_owned();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(ClientError::Invalid(format!("server URL {url:?} must start with http:// or https://")));
            }
            bases.push(base);
        }
        if bases.is_empty() {
            return Err(ClientError::Invalid("no server URL given".into()));
        }
        if let Some(t) = &options.token
            && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ClientError::Invalid("the token must be printable ASCII with no spaces".into()));
        }
        let http = match (&options.ca_cert_pem, &options.identity_pem) {
            // Building a transport loads the system's trusted roots (milliseconds), so clients
            // without TLS settings of their own share one, and with it one connection pool.
            (None, None) => {
                static SHARED: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
                match SHARED.get() {
                    Some(http) => http.clone(),
                    None => {
                        let http = transport(&options)?;
                        SHARED.get_or_init(|| http).clone()
                    }
                }
            }
            _ => transport(&options)?,
        };
        Ok(Client {
            http,
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
            token: options.token.map(Arc::from),
        })
    }

    /// The URL of the node in use now.
    pub fn url(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every node's URL, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.bases
    }

    /// Moves on from node `from` to the next, unless another call already did.
    fn fail_over(&self, from: usize) {
        if self.bases.len() > 1 {
            let next = (from + 1) % self.bases.len();
            if self.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                tracing::warn!(from = %self.bases[from], to = %self.bases[next], "failing over to another server node");
            }
        }
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<(StatusCode, T)> {
        let mut tries = 0;
        loop {
            let node = self.current.load(Ordering::Relaxed) % self.bases.len();
            tries += 1;
            match self.call_node(node, method.clone(), path, body, timeout).await {
                Err(e) if e.never_ran() && self.bases.len() > 1 => {
                    self.fail_over(node);
                    if tries >= self.bases.len() {
                        return Err(e);
                    }
                }
                Err(ClientError::Transport(e)) => {
                    // It may have run: do not resend, but use another node next time.
                    self.fail_over(node);
                    return Err(ClientError::Transport(e));
                }
                other => return other,
            }
        }
    }

    async fn call_node<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        node: usize,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<(StatusCode, T)> {
        let write = method != Method::GET;
        let mut req = self.http.request(method, format!("{}{path}", self.bases[node])).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        match body {
            Some(b) => req = req.json(b),
            // The server wants every write to say it is JSON, even an empty one (browsers cannot
            // send that cross-site without asking).
            None if write => req = req.header(reqwest::header::CONTENT_TYPE, "application/json"),
            None => {}
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                    field: e.error.field,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                    field: None,
                },
            });
        }
        // An empty body (204 No Content) reads as `null`.
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let value = serde_json::from_slice(body)
            .map_err(|e| ClientError::Invalid(format!("unexpected response from {path}: {e}")))?;
        Ok((status, value))
    }

    const TIMEOUT: Duration = Duration::from_secs(30);
    /// A bulk change of up to 100,000 tasks takes a while.
    const BULK_TIMEOUT: Duration = Duration::from_secs(300);

    /// Submits one task. Returns it once durably stored; with an idempotency key that was already
    /// used, returns the first task.
    pub async fn submit(&self, task: SubmitTask) -> Result<Task> {
        Ok(self.call(Method::POST, "/v1/tasks", Some(&task), Self::TIMEOUT).await?.1)
    }

    /// Submits tasks atomically: all are stored, or none.
    pub async fn submit_batch(&self, tasks: Vec<SubmitTask>) -> Result<Vec<Task>> {
        let list: TaskList =
            self.call(Method::POST, "/v1/tasks/batch", Some(&SubmitBatch { tasks }), Self::TIMEOUT).await?.1;
        Ok(list.tasks)
    }

    pub async fn get(&self, id: TaskId) -> Result<Task> {
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/tasks/{id}"), None, Self::TIMEOUT).await?.1)
    }

    /// One page of tasks, newest first.
    pub async fn list(&self, options: &ListOptions) -> Result<TaskList> {
        let query = serde_urlencoded_query(options);
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/tasks{query}"), None, Self::TIMEOUT).await?.1)
    }

    /// Waits until the task finishes (succeeded, failed, cancelled or expired), up to `timeout`.
    pub async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Task> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let poll = left.min(Duration::from_secs(30));
            let path = format!("/v1/tasks/{id}/wait?timeout_ms={}", poll.as_millis());
            let task: Task = self.call::<(), _>(Method::GET, &path, None, poll + Self::TIMEOUT).await?.1;
            if task.state.is_terminal() {
                return Ok(task);
            }
            if left.is_zero() || tokio::time::Instant::now() >= deadline {
                return Err(ClientError::WaitTimeout(id));
            }
        }
    }

    /// Waits for what the task stands for. Like [`Client::wait`], but should the task have fanned
    /// out, its join's outcome stands in for the task's (as it does for whatever depends on the
    /// task in a workflow), so this waits for the join too, and for the join's own join should that
    /// fan out again. Returns the task with the state, result and error it finally stands for.
    pub async fn wait_outcome(&self, id: TaskId, timeout: Duration) -> Result<Task> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut task = self.wait(id, timeout).await?;
        let mut last = task.clone();
        while last.state == TaskState::Succeeded {
            let (Some(workflow), Some(node)) = (last.workflow_id, last.node.as_deref()) else { break };
            let join = format!("{node}/join");
            let nodes = self.get_workflow(workflow).await?.nodes;
            let Some(join) = nodes.iter().find(|n| n.node == join) else { break };
            last = self.wait(join.task_id, deadline.saturating_duration_since(tokio::time::Instant::now())).await?;
        }
        if last.id != task.id {
            task.state = last.state;
            task.result = last.result;
            task.error = last.error;
            task.finished_at = last.finished_at;
        }
        Ok(task)
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Task> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/tasks/{id}/cancel"), None, Self::TIMEOUT).await?.1)
    }

    /// Sends a failed (or cancelled) task back to the queue with a fresh attempt budget.
    pub async fn retry(&self, id: TaskId) -> Result<Task> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/tasks/{id}/retry"), None, Self::TIMEOUT).await?.1)
    }

    /// Retries every failed (or, with `state: cancelled`, cancelled) task matching the filter, on
    /// the server, a page at a time; at most `limit` (default 10,000) in one call.
    pub async fn retry_matching(&self, filter: &BulkFilter) -> Result<BulkResult> {
        Ok(self.call(Method::POST, "/v1/tasks/retry", Some(filter), Self::BULK_TIMEOUT).await?.1)
    }

    /// Cancels every unfinished task matching the filter (running ones are asked to stop).
    pub async fn cancel_matching(&self, filter: &BulkFilter) -> Result<BulkResult> {
        Ok(self.call(Method::POST, "/v1/tasks/cancel", Some(filter), Self::BULK_TIMEOUT).await?.1)
    }

    /// Submits a workflow (a DAG of tasks) atomically.
    pub async fn submit_workflow(&self, spec: &WorkflowSpec) -> Result<Workflow> {
        Ok(self.call(Method::POST, "/v1/workflows", Some(spec), Self::TIMEOUT).await?.1)
    }

    /// Workflows newest first, by state and name, a page at a time (needs a token for every
    /// queue).
    pub async fn workflows(&self, options: &WorkflowListOptions) -> Result<WorkflowList> {
        let query = serde_urlencoded_query(options);
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/workflows{query}"), None, Self::TIMEOUT).await?.1)
    }

    /// A workflow with its nodes and speedup report.
    pub async fn get_workflow(&self, id: TaskId) -> Result<Workflow> {
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/workflows/{id}"), None, Self::TIMEOUT).await?.1)
    }

    /// Waits until the workflow's outcome is decided, up to `timeout`.
    pub async fn wait_workflow(&self, id: TaskId, timeout: Duration) -> Result<Workflow> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let poll = deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(30));
            let path = format!("/v1/workflows/{id}/wait?timeout_ms={}", poll.as_millis());
            let wf: Workflow = self.call::<(), _>(Method::GET, &path, None, poll + Self::TIMEOUT).await?.1;
            if wf.state.is_terminal() {
                return Ok(wf);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::WaitTimeout(id));
            }
        }
    }

    pub async fn cancel_workflow(&self, id: TaskId) -> Result<Workflow> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/workflows/{id}/cancel"), None, Self::TIMEOUT).await?.1)
    }

    /// Runs a failed or cancelled workflow's failed and cancelled tasks again, with everything
    /// downstream of them, keeping what succeeded (and its results). The workflow is running again
    /// when this returns; wait for it with [`Client::wait_workflow`]. A workflow that is running or
    /// succeeded is refused (409).
    pub async fn retry_workflow(&self, id: TaskId) -> Result<Workflow> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/workflows/{id}/retry"), None, Self::TIMEOUT).await?.1)
    }

    /// Fans a running task out into children and a join (the worker SDK's `ctx.fan_out`).
    pub async fn fan_out(&self, task: TaskId, req: &FanOutRequest) -> Result<FanOut> {
        Ok(self.call(Method::POST, &format!("/v1/tasks/{task}/fan-out"), Some(req), Self::TIMEOUT).await?.1)
    }

    /// One page of a workflow task's parents' outcomes, in node order, after node `after`.
    pub async fn parents(&self, task: TaskId, after: Option<&str>, limit: u32) -> Result<ParentList> {
        let mut query = format!("limit={limit}");
        if let Some(a) = after {
            query.push('&');
            query.push_str(&serde_urlencoded::to_string([("after", a)]).expect("a string pair"));
        }
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/tasks/{task}/parents?{query}"), None, Self::TIMEOUT).await?.1)
    }

    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let list: WorkerList = self.call::<(), _>(Method::GET, "/v1/workers", None, Self::TIMEOUT).await?.1;
        Ok(list.workers)
    }

    /// The kinds the server knows (live workers' handlers, ready tasks, payload schemas), by name.
    pub async fn kinds(&self) -> Result<Vec<KindInfo>> {
        let list: KindList = self.call::<(), _>(Method::GET, "/v1/kinds", None, Self::TIMEOUT).await?.1;
        Ok(list.kinds)
    }

    /// Every queue with its counts, by name.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let list: QueueList = self.call::<(), _>(Method::GET, "/v1/queues", None, Self::TIMEOUT).await?.1;
        Ok(list.queues)
    }

    /// Pauses a queue: nothing is leased from it until it is resumed. A queue nobody has used
    /// (no tasks, no settings, no activity in the last hour) is refused as not found unless
    /// `create`: a misspelt name does not quietly become a queue.
    pub async fn pause_queue(&self, queue: &str, create: bool) -> Result<QueueInfo> {
        self.queue_call(queue, "pause", create).await
    }

    /// Resumes a paused queue (`create` as for [`Client::pause_queue`]).
    pub async fn resume_queue(&self, queue: &str, create: bool) -> Result<QueueInfo> {
        self.queue_call(queue, "resume", create).await
    }

    /// Sets a queue's weight: its share when a worker serves several queues (`create` as for
    /// [`Client::pause_queue`]).
    pub async fn set_queue_weight(&self, queue: &str, weight: u32, create: bool) -> Result<QueueInfo> {
        self.update_queue(queue, &QueueUpdate { weight: Some(weight), ..Default::default() }, create).await
    }

    /// Changes a queue's settings: its weight and its limits (which replace the old ones);
    /// `create` as for [`Client::pause_queue`].
    pub async fn update_queue(&self, queue: &str, body: &QueueUpdate, create: bool) -> Result<QueueInfo> {
        let path = format!("/v1/queues/{}{}", path_segment(queue), create_query(create));
        Ok(self.call(Method::PATCH, &path, Some(body), Self::TIMEOUT).await?.1)
    }

    /// Forgets an empty queue's settings, so it is no longer listed once idle. Refused (409)
    /// while it holds ready, scheduled or running tasks.
    pub async fn remove_queue(&self, queue: &str) -> Result<()> {
        let path = format!("/v1/queues/{}", path_segment(queue));
        self.call::<(), serde_json::Value>(Method::DELETE, &path, None, Self::TIMEOUT).await.map(|_| ())
    }

    /// Creates a cron schedule.
    pub async fn create_cron(&self, spec: &CronSpec) -> Result<CronInfo> {
        Ok(self.call(Method::POST, "/v1/cron", Some(spec), Self::TIMEOUT).await?.1)
    }

    /// Every cron schedule, by name.
    pub async fn crons(&self) -> Result<Vec<CronInfo>> {
        let list: CronList = self.call::<(), _>(Method::GET, "/v1/cron", None, Self::TIMEOUT).await?.1;
        Ok(list.schedules)
    }

    /// Pauses (`true`) or resumes a cron schedule.
    pub async fn pause_cron(&self, name: &str, paused: bool) -> Result<CronInfo> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/v1/cron/{}/{action}", path_segment(name));
        Ok(self.call::<(), _>(Method::POST, &path, None, Self::TIMEOUT).await?.1)
    }

    /// Changes a schedule: the fields given replace the stored ones (`task` the whole template).
    pub async fn update_cron(&self, name: &str, change: &CronChange) -> Result<CronInfo> {
        let path = format!("/v1/cron/{}", path_segment(name));
        Ok(self.call(Method::PATCH, &path, Some(change), Self::TIMEOUT).await?.1)
    }

    /// Fires a schedule now, once, besides its ticks; returns the task it submitted.
    pub async fn run_cron(&self, name: &str) -> Result<Task> {
        let path = format!("/v1/cron/{}/run", path_segment(name));
        Ok(self.call::<(), _>(Method::POST, &path, None, Self::TIMEOUT).await?.1)
    }

    pub async fn delete_cron(&self, name: &str) -> Result<()> {
        let path = format!("/v1/cron/{}", path_segment(name));
        self.call::<(), serde_json::Value>(Method::DELETE, &path, None, Self::TIMEOUT).await.map(|_| ())
    }

    /// Adds a webhook endpoint; the answer holds its signing secret, shown this once.
    pub async fn create_webhook(&self, call: &CreateWebhookCall) -> Result<CreatedWebhook> {
        Ok(self.call(Method::POST, "/v1/webhooks", Some(call), Self::TIMEOUT).await?.1)
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookInfo>> {
        let list: WebhookList = self.call::<(), _>(Method::GET, "/v1/webhooks", None, Self::TIMEOUT).await?.1;
        Ok(list.webhooks)
    }

    pub async fn delete_webhook(&self, name: &str) -> Result<()> {
        let path = format!("/v1/webhooks/{}", path_segment(name));
        self.call::<(), serde_json::Value>(Method::DELETE, &path, None, Self::TIMEOUT).await.map(|_| ())
    }

    /// An endpoint's delivery log, newest first.
    pub async fn webhook_deliveries(&self, name: &str, limit: u32) -> Result<Vec<Delivery>> {
        let path = format!("/v1/webhooks/{}/deliveries?limit={limit}", path_segment(name));
        let list: DeliveryList = self.call::<(), _>(Method::GET, &path, None, Self::TIMEOUT).await?.1;
        Ok(list.deliveries)
    }

    /// Sends the endpoint every matching event after `after` again (`"0"`: all still kept).
    pub async fn replay_webhook(&self, name: &str, after: &str) -> Result<WebhookInfo> {
        let path = format!("/v1/webhooks/{}/replay", path_segment(name));
        let body = ReplayCall { after: after.to_owned() };
        Ok(self.call(Method::POST, &path, Some(&body), Self::TIMEOUT).await?.1)
    }

    /// Enables a disabled endpoint (clearing its failures).
    pub async fn enable_webhook(&self, name: &str) -> Result<WebhookInfo> {
        let path = format!("/v1/webhooks/{}/enable", path_segment(name));
        Ok(self.call::<(), _>(Method::POST, &path, None, Self::TIMEOUT).await?.1)
    }

    async fn queue_call(&self, queue: &str, action: &str, create: bool) -> Result<QueueInfo> {
        let path = format!("/v1/queues/{}/{action}{}", path_segment(queue), create_query(create));
        Ok(self.call::<(), _>(Method::POST, &path, None, Self::TIMEOUT).await?.1)
    }

    /// Whether the server process answers (`/healthz`), without touching its store.
    pub async fn live(&self) -> Result<()> {
        self.call::<(), serde_json::Value>(Method::GET, "/healthz", None, Duration::from_secs(5)).await.map(|_| ())
    }

    /// Whether the server and its store are ready.
    pub async fn ready(&self) -> Result<()> {
        self.call::<(), serde_json::Value>(Method::GET, "/readyz", None, Duration::from_secs(5)).await.map(|_| ())
    }

    // Tokens and the audit log (admin).

    /// Creates a token; the answer holds its secret, shown this once.
    pub async fn create_token(&self, call: &CreateTokenCall) -> Result<CreatedToken> {
        Ok(self.call(Method::POST, "/v1/tokens", Some(call), Self::TIMEOUT).await?.1)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let list: TokenList = self.call::<(), _>(Method::GET, "/v1/tokens", None, Self::TIMEOUT).await?.1;
        Ok(list.tokens)
    }

    /// Revokes a token by id or by its live name.
    pub async fn revoke_token(&self, token: &str) -> Result<TokenInfo> {
        let path = format!("/v1/tokens/{}/revoke", path_segment(token));
        Ok(self.call::<(), _>(Method::POST, &path, None, Self::TIMEOUT).await?.1)
    }

    /// The audit log from `since` (RFC 3339; default the last day).
    pub async fn audit(&self, since: Option<taskwarden_core::Timestamp>, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut path = format!("/v1/audit?limit={limit}");
        if let Some(t) = since {
            path.push_str(&format!("&since={}", path_segment(&t.to_string())));
        }
        let list: AuditList = self.call::<(), _>(Method::GET, &path, None, Self::TIMEOUT).await?.1;
        Ok(list.entries)
    }

    // The worker protocol.

    pub async fn register(&self, req: &RegisterWorker) -> Result<WorkerInfo> {
        Ok(self.call(Method::POST, "/v1/workers", Some(req), Self::TIMEOUT).await?.1)
    }

    /// Leases up to `limit` tasks, waiting up to `wait` for one to arrive.
    pub async fn fetch(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<LeasedTask>> {
        let req = FetchRequest {
            queues: queues.to_vec(),
            limit,
            wait_ms: wait.as_millis() as u64,
            finished: vec![],
            reports: vec![],
        };
        Ok(self.fetch_request(worker_id, &req).await?.tasks)
    }

    /// Leases tasks as `req` asks: [`Client::fetch`], and also `finished` (tasks whose outcomes
    /// are still on their way, so what they hold counts as free on the worker) and `reports`
    /// (outcomes recorded before leasing, whose results the answer carries).
    pub async fn fetch_request(&self, worker_id: &str, req: &FetchRequest) -> Result<FetchResponse> {
        let wait = Duration::from_millis(req.wait_ms);
        Ok(self.call(Method::POST, &format!("/v1/workers/{worker_id}/fetch"), Some(req), wait + Self::TIMEOUT).await?.1)
    }

    pub async fn heartbeat(&self, worker_id: &str, leases: Vec<HeldLease>) -> Result<Vec<LeaseStatus>> {
        let resp: WorkerHeartbeatResponse = self
            .call(
                Method::POST,
                &format!("/v1/workers/{worker_id}/heartbeat"),
                Some(&WorkerHeartbeat { leases }),
                Self::TIMEOUT,
            )
            .await?
            .1;
        Ok(resp.leases)
    }

    pub async fn report(&self, worker_id: &str, reports: Vec<Report>) -> Result<Vec<ReportResult>> {
        let resp: ReportBatchResponse = self
            .call(
                Method::POST,
                &format!("/v1/workers/{worker_id}/reports"),
                Some(&ReportBatch { reports }),
                Self::TIMEOUT,
            )
            .await?
            .1;
        Ok(resp.results)
    }
}

/// An HTTP transport with `options`' TLS settings.
fn transport(options: &ClientOptions) -> Result<reqwest::Client> {
    let mut http =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).pool_max_idle_per_host(64).tcp_nodelay(true);
    if let Some(pem) = &options.ca_cert_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Invalid(format!("the CA certificate is not PEM: {e}")))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    if let Some(pem) = &options.identity_pem {
        let identity = reqwest::Identity::from_pem(pem)
            .map_err(|e| ClientError::Invalid(format!("the client certificate and key are not PEM: {e}")))?;
        http = http.identity(identity);
    }
    Ok(http.build()?)
}

/// Makes ring rustls's process-wide crypto provider, unless one is set already. HTTPS clients
/// (this crate's, and any `reqwest::Client` built after) need one; the workspace builds only ring,
/// so there is nothing to choose. Cheap to call again.
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; its provider is the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A queue name as one URL path segment.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn serde_urlencoded_query<T: Serialize>(options: &T) -> String {
    let query = serde_urlencoded::to_string(options).expect("flat options serialize");
    if query.is_empty() { query } else { format!("?{query}") }
}

/// What [`Client::events`] and [`Client::follow_events`] read: where to start and which events.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventOptions {
    /// An event id to start after, or `now`; default the oldest event kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<TaskId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Event types, comma-separated (`task.failed,workflow.failed`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
    /// Most events on a page (not used by a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Client {
    /// A task's log lines after `after` (a line's `seq`; 0 for the first). With a `wait`, a read
    /// that finds no new line waits up to that long for one, unless the task has finished.
    pub async fn task_logs(&self, id: TaskId, after: u64, wait: Duration) -> Result<TaskLogPage> {
        let path = format!("/v1/tasks/{id}/logs?after={after}&timeout_ms={}", wait.as_millis());
        Ok(self.call::<(), _>(Method::GET, &path, None, Self::TIMEOUT + wait).await?.1)
    }

    /// One page of the event log, oldest first; go on from the page's `next`.
    pub async fn events(&self, options: &EventOptions) -> Result<EventList> {
        let query = serde_urlencoded_query(options);
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/events{query}"), None, Self::TIMEOUT).await?.1)
    }

    /// Follows the event log live (Server-Sent Events). The stream reconnects by itself when the
    /// connection drops, to the next node if there are several, resuming after the last event it
    /// returned: nothing still kept is missed and nothing is returned twice.
    pub async fn follow_events(&self, options: EventOptions) -> Result<EventStream> {
        let mut stream =
            EventStream { client: self.clone(), options, last_id: None, response: None, parser: SseParser::default() };
        stream.connect().await?;
        Ok(stream)
    }
}

pub use taskwarden_core::events::{Event, EventId, EventList, EventType};
pub use taskwarden_core::task_logs::{TaskLogLine, TaskLogPage};
pub use taskwarden_core::webhooks::{CreateWebhookCall, CreatedWebhook, Delivery, WebhookInfo};
use taskwarden_core::webhooks::{DeliveryList, ReplayCall, WebhookList};

/// A live event stream from [`Client::follow_events`].
pub struct EventStream {
    client: Client,
    options: EventOptions,
    last_id: Option<EventId>,
    response: Option<reqwest::Response>,
    parser: SseParser,
}

impl EventStream {
    /// How long to wait before connecting again after the connection dropped.
    const RECONNECT: Duration = Duration::from_secs(1);

    /// The id of the last event returned: where a later stream would resume.
    pub fn last_id(&self) -> Option<EventId> {
        self.last_id
    }

    /// The next event, waiting as long as it takes. Errors only when the server refuses the
    /// stream (a bad filter, a token without the role); a dropped connection is reconnected.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(data) = self.parser.next_data() {
                let event: Event = serde_json::from_str(&data)
                    .map_err(|e| ClientError::Invalid(format!("unexpected event from the stream: {e}")))?;
                self.last_id = Some(event.id);
                return Ok(event);
            }
            let chunk = match &mut self.response {
                Some(r) => r.chunk().await,
                None => Ok(None),
            };
            match chunk {
                Ok(Some(bytes)) => self.parser.feed(&bytes),
                // The connection ended or broke: connect again after a pause, from the last event.
                Ok(None) | Err(_) => {
                    self.response = None;
                    self.parser = SseParser::default();
                    tokio::time::sleep(Self::RECONNECT).await;
                    match self.connect().await {
                        Err(e) if !e.never_ran() && !matches!(e, ClientError::Transport(_)) => return Err(e),
                        _ => {}
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let client = &self.client;
        let node = client.current.load(Ordering::Relaxed) % client.bases.len();
        let query = serde_urlencoded_query(&self.options);
        let mut req = client
            .http
            .get(format!("{}/v1/events{query}", client.bases[node]))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = &client.token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = self.last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                client.fail_over(node);
                return Err(e.into());
            }
        };
        let status = resp.status();
        if !status.is_success() {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                client.fail_over(node);
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                    field: e.error.field,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::new(),
                    field: None,
                },
            });
        }
        self.response = Some(resp);
        Ok(())
    }
}

/// The Server-Sent Events wire format, as much of it as Taskwarden's stream uses: `data:` lines
/// make up an event, a blank line ends it, anything else (`id:`, `event:`, `:` keep-alive
/// comments) is read past (each event's JSON carries its id and type).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    data: String,
    done: std::collections::VecDeque<String>,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    self.done.push_back(std::mem::take(&mut self.data));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }

    fn next_data(&mut self) -> Option<String> {
        self.done.pop_front()
    }
}

#[cfg(test)]
mod sse_tests {
    use super::SseParser;

    #[test]
    fn events_are_read_across_chunks_and_comments_are_skipped() {
        let mut p = SseParser::default();
        p.feed(b": keep-alive\n\nid: 1\nevent: task.started\ndata: {\"a\":");
        assert_eq!(p.next_data(), None);
        p.feed(b"1}\r\n\r\ndata: x\ndata: y\n\n");
        assert_eq!(p.next_data().as_deref(), Some("{\"a\":1}"));
        assert_eq!(p.next_data().as_deref(), Some("x\ny"));
        assert_eq!(p.next_data(), None);
    }
}
