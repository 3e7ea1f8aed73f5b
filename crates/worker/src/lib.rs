//! Taskwarden's Rust worker SDK (tokio).
//!
//! Register async handlers by kind, with serde-typed payloads; the worker fetches tasks from the
//! queues it serves, runs up to `concurrency` at once, sends heartbeats, reports outcomes in
//! batches, and on shutdown lets running tasks finish before giving back the rest.
//!
//! ```no_run
//! use serde::Deserialize;
//! use taskwarden_worker::{TaskContext, TaskError, Worker};
//!
//! #[derive(Deserialize)]
//! struct Resize { url: String, width: u32 }
//!
//! async fn resize(ctx: TaskContext, job: Resize) -> Result<String, TaskError> {
//!     ctx.progress(0.5, Some("downloaded".to_string()));
//!     if job.width == 0 {
//!         return Err(TaskError::fail("width must be positive")); // permanent: no retry
//!     }
//!     Ok(format!("{} at {}px", job.url, job.width))
//! }
//!
//! # async fn run() -> Result<(), taskwarden_worker::WorkerError> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! Worker::builder("http://127.0.0.1:7433")
//!     .queue("images")
//!     .concurrency(16)
//!     .handler("resize", resize)
//!     .run(shutdown)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Layout: `handler` (the context and error types, handler erasure), `runtime` (fetch, execute,
//! heartbeat, shutdown), `reporter` (batched outcome reports), [`builtin`] (the CLI's handlers),
//! `fetch_policy` (what the built-in `http.fetch` may reach) and `fetch_guard` (its HTTP client,
//! which enforces that).

pub mod builtin;
mod fetch_guard;
mod fetch_policy;
mod handler;
mod reporter;
mod runtime;
mod task_logs;
mod traces;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use taskwarden_client::{Client, ClientError, ClientOptions};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use fetch_policy::{AllowRule, AllowRuleError, FetchPolicy};
pub use handler::{TaskContext, TaskError};
pub use runtime::{PREFETCH_GIVE_BACK, PREFETCH_HORIZON, RunSummary};
pub use task_logs::TaskLogLayer;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// A worker's settings.
pub use taskwarden_core::placement::{Labels, Resources};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub name: String,
    pub queues: Vec<String>,
    /// Most tasks run at once.
    pub concurrency: usize,
    /// Most tasks leased beyond `concurrency`, waiting here for a free slot, so that a slot that
    /// frees starts the next task at once instead of after a round trip to the server. Only as
    /// many wait as the slots start within [`PREFETCH_HORIZON`] at the pace tasks have been
    /// running: many while tasks take microseconds, none once they take longer than that, so no
    /// task waits here behind a slow one while another worker is free. `None`: four times
    /// `concurrency`; `Some(0)` turns it off. A worker that declares `capacity` never prefetches:
    /// a leased task holds its resources on the server whether it runs or waits.
    pub prefetch: Option<usize>,
    /// Most tasks asked for in one fetch.
    pub max_fetch: u32,
    /// Fetches in flight at once while work is flowing. Two keep work coming while one is on its
    /// way back, which matters when a fetch takes a while (a database server, a remote node).
    /// Only one of them ever waits on the server for work.
    pub fetchers: usize,
    /// How long one fetch waits on the server for work before asking again.
    pub fetch_wait: Duration,
    /// How long running tasks may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Resources it can run at once (`cpu`, `memory_mb`, `gpu`, any name). Tasks that ask for
    /// resources are leased to it only while it has enough free.
    pub capacity: Resources,
    /// Its labels (`region=eu`): tasks that require labels go only to workers that have them.
    pub labels: Labels,
    /// What the built-in `http.fetch` handler may reach and read.
    pub fetch: FetchPolicy,
    /// Most children one built-in `fan.out` task may ask for.
    pub fan_out_max: u32,
    /// How long a worker started before its server keeps trying to register (each failed try
    /// logged) before it gives up.
    pub startup_wait: Duration,
    /// Whether each attempt gets a `run {kind}` span, made with the OpenTelemetry tracer
    /// provider the process installed (the CLI's `--otlp-endpoint` installs one and turns this
    /// on). Off, no span is made at all: a handler's `ctx.traceparent()` is the task's own.
    pub traces: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: default_name(),
            queues: Vec::new(),
            concurrency: 16,
            prefetch: None,
            max_fetch: 256,
            fetchers: 2,
            fetch_wait: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(30),
            capacity: Resources::default(),
            labels: Labels::default(),
            fetch: FetchPolicy::default(),
            // The most children the server takes in one fan-out, with its default limits.
            fan_out_max: (taskwarden_core::Limits::default().max_workflow_tasks - 1) as u32,
            startup_wait: Duration::from_secs(60),
            traces: false,
        }
    }
}

fn default_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

type Handlers = HashMap<String, (Arc<dyn handler::ErasedHandler>, Option<Duration>)>;

/// Builds and runs a worker.
pub struct Worker {
    url: String,
    config: WorkerConfig,
    handlers: Handlers,
    /// JSON Schemas for some kinds' payloads, registered with the server.
    schemas: std::collections::BTreeMap<String, serde_json::Value>,
    builtins: builtin::Settings,
    /// The token and TLS settings its client connects with.
    client: ClientOptions,
}

impl Worker {
    pub fn builder(url: impl Into<String>) -> Worker {
        Worker {
            url: url.into(),
            config: WorkerConfig::default(),
            handlers: HashMap::new(),
            schemas: Default::default(),
            builtins: Default::default(),
            client: ClientOptions::default(),
        }
    }

    /// The token (a `worker` token, once the server has tokens) and TLS settings to connect with.
    /// The worker registers with that token, and only that token may fetch and report as it.
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.client = options;
        self
    }

    /// Serves this queue (call again to serve several).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.config.queues.push(queue.into());
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Most tasks leased beyond `concurrency` while tasks are short (see
    /// [`WorkerConfig::prefetch`]); 0 turns prefetching off.
    /// How long to keep trying to register while the server cannot be reached (see
    /// [`WorkerConfig::startup_wait`]); zero gives up at once.
    pub fn startup_wait(mut self, wait: Duration) -> Self {
        self.config.startup_wait = wait;
        self
    }

    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = Some(n);
        self
    }

    /// Fetches in flight at once (default 2, at most 16).
    pub fn fetchers(mut self, n: usize) -> Self {
        self.config.fetchers = n;
        self
    }

    /// What the worker can run at once (`cpu`, `memory_mb`, `gpu`, any name).
    pub fn capacity(mut self, capacity: Resources) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// The worker's labels (`region=eu`).
    pub fn labels(mut self, labels: Labels) -> Self {
        self.config.labels = labels;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Makes a `run {kind}` span for each attempt with the tracer provider the process installed
    /// (see [`WorkerConfig::traces`]). Off by default, and then no span is made.
    pub fn traces(mut self, on: bool) -> Self {
        self.config.traces = on;
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_wait = wait;
        self
    }

    /// What the built-in `http.fetch` handler may reach and how much it reads. The default
    /// reaches only public addresses, follows at most 5 redirects, reads at most 1 MiB and takes
    /// at most 30 s; see [`FetchPolicy`].
    ///
    /// ```
    /// use taskwarden_worker::{AllowRule, FetchPolicy, Worker};
    ///
    /// // A site of our own on this host, and the office network.
    /// let policy = FetchPolicy::default()
    ///     .allow("127.0.0.1:8080".parse()?)
    ///     .allow("10.0.0.0/8".parse()?);
    /// let worker = Worker::builder("http://127.0.0.1:7433").queue("fetch").fetch_policy(policy).builtin_handlers();
    /// # let _ = worker;
    /// # Ok::<(), taskwarden_worker::AllowRuleError>(())
    /// ```
    pub fn fetch_policy(mut self, policy: FetchPolicy) -> Self {
        self.config.fetch = policy;
        self
    }

    /// Most children one built-in `fan.out` task may ask for (default 99,999, the most the
    /// server takes in one fan-out by default). A larger `count` fails the task permanently.
    pub fn fan_out_max(mut self, n: u32) -> Self {
        self.config.fan_out_max = n;
        self
    }

    /// Registers an async handler for tasks of `kind`. The payload is deserialized into `P`; the
    /// returned value is serialized as the task's result.
    pub fn handler<F, Fut, P, R>(self, kind: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.add(kind.into(), f, None)
    }

    /// Like [`Worker::handler`], with a timeout for this kind (the task's own timeout still applies
    /// if shorter). A handler that runs past it is stopped and the attempt fails as retryable.
    pub fn handler_with_timeout<F, Fut, P, R>(self, kind: impl Into<String>, timeout: Duration, f: F) -> Self
    where
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.add(kind.into(), f, Some(timeout))
    }

    fn add<F, Fut, P, R>(mut self, kind: String, f: F, timeout: Option<Duration>) -> Self
    where
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.handlers.insert(kind, (Arc::new(handler::TypedHandler::new(f)), timeout));
        self
    }

    /// A JSON Schema for the payloads of `kind` (one of its handlers), registered with the server
    /// when the worker starts: from then on a submit of that kind whose payload does not match
    /// is refused with 422 naming the JSON path (`payload.url: required`), on every server node,
    /// and never reaches a handler.
    ///
    /// ```
    /// use taskwarden_worker::Worker;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Resize { image: String, width: u32 }
    ///
    /// let worker = Worker::builder("http://127.0.0.1:7433")
    ///     .handler("resize", |_ctx, r: Resize| async move { Ok(format!("{} at {}px", r.image, r.width)) })
    ///     .payload_schema("resize", serde_json::json!({
    ///         "type": "object",
    ///         "required": ["image", "width"],
    ///         "properties": {"image": {"type": "string"}, "width": {"type": "integer", "minimum": 1}}
    ///     }));
    /// # let _ = worker;
    /// ```
    pub fn payload_schema(mut self, kind: impl Into<String>, schema: serde_json::Value) -> Self {
        self.schemas.insert(kind.into(), schema);
        self
    }

    /// The built-in handlers: `echo`, `sleep`, `fail`, `fan.out` and `http.fetch`.
    pub fn builtin_handlers(self) -> Self {
        let settings = self.builtins.clone();
        builtin::register(self, settings)
    }

    /// Runs until `shutdown` fires, then shuts down gracefully (see [`WorkerConfig::shutdown_grace`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
        let c = &self.config;
        if c.queues.is_empty() {
            return Err(WorkerError::Config("serve at least one queue".into()));
        }
        if c.concurrency == 0 || c.concurrency > 100_000 {
            return Err(WorkerError::Config("concurrency must be between 1 and 100000".into()));
        }
        if c.prefetch.is_some_and(|n| n > 100_000) {
            return Err(WorkerError::Config("prefetch must be at most 100000".into()));
        }
        if self.handlers.is_empty() {
            return Err(WorkerError::Config("register at least one handler".into()));
        }
        if let Some(kind) = self.schemas.keys().find(|k| !self.handlers.contains_key(*k)) {
            return Err(WorkerError::Config(format!("a payload schema for {kind:?}, which has no handler")));
        }
        // The server's limits: asking for more would be refused on every fetch.
        if c.max_fetch == 0 || c.max_fetch > 1000 {
            return Err(WorkerError::Config("max_fetch must be between 1 and 1000".into()));
        }
        if c.fetchers == 0 || c.fetchers > 16 {
            return Err(WorkerError::Config("fetchers must be between 1 and 16".into()));
        }
        if c.fetch_wait > Duration::from_secs(60) {
            return Err(WorkerError::Config("fetch_wait must be at most 60 s".into()));
        }
        if c.fan_out_max == 0 {
            return Err(WorkerError::Config("fan_out_max must be at least 1".into()));
        }
        let fetch = fetch_guard::FetchGuard::new(c.fetch.clone())?;
        let builtins = builtin::Builtins { fetch, fan_out_max: c.fan_out_max };
        if self.builtins.set(builtins).is_err() {
            unreachable!("run takes the worker by value, so its settings are set once");
        }
        let client = Client::with_options(&self.url, self.client)?;
        runtime::run(self.config, self.handlers, self.schemas, client, shutdown).await
    }
}
