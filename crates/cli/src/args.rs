//! The command line. Every client command takes `--url` (or `TASKWARDEN_URL`), one URL or several
//! comma-separated.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "taskwarden", version, about = "A distributed task scheduler: server, worker and CLI in one binary.")]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr: `plain` (colour only on a terminal) or `json` (one
    /// object per line) [default: plain].
    #[arg(long, env = "TASKWARDEN_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a server: on the embedded SQLite store, or with --database on PostgreSQL.
    Server(ServerArgs),
    /// Apply the database's pending schema migrations and exit.
    Migrate(MigrateArgs),
    /// Copy the embedded store, consistently, while its server runs (SQLite's online backup).
    Backup(BackupArgs),
    /// Start an embedded store from a backup: its leases are treated as expired.
    Restore(RestoreArgs),
    /// Run a worker with the built-in handlers (echo, sleep, fail, fan.out, http.fetch).
    Worker(WorkerArgs),
    /// Submit a task; prints its id (or the task as JSON with --json).
    Submit(SubmitArgs),
    /// Inspect and manage tasks.
    Task(TaskArgs),
    /// List the workers the server knows.
    Workers(WorkersArgs),
    /// The kinds live workers have handlers for, and in which queues.
    Kinds(KindsArgs),
    /// List queues with their counts; pause, resume, weigh and limit them.
    Queue(QueueArgs),
    /// Submit, list, show, wait for, cancel and retry workflows (DAGs of tasks).
    Workflow(WorkflowArgs),
    /// Cron schedules: add, ls, pause, resume, rm.
    Cron(CronArgs),
    /// Run the demo: an embedded server, workers and 200 http.fetch tasks.
    Demo(DemoArgs),
    /// Run the benchmark against a fresh server process.
    Bench(BenchArgs),
    /// API tokens: create (online, or offline straight into the store), ls, revoke.
    Token(TokenArgs),
    /// Read the audit log (admin).
    Audit(AuditArgs),
    /// Read the event log, or follow it live with --follow.
    Events(EventsArgs),
    /// Webhook endpoints (admin): add, ls, rm, deliveries, replay, enable.
    Webhook(WebhookArgs),
}

#[derive(ClapArgs)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: WebhookCommand,
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint: it is sent every matching event from now on, signed; prints its secret
    /// (shown only now).
    Add {
        name: String,
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (task.failed,workflow.succeeded) [default: every type].
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Only events of these queues, comma-separated [default: every queue].
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the endpoints: where each stands, its failures, whether it is disabled.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint and its delivery log.
    Rm { name: String },
    /// An endpoint's delivery log, newest first.
    Deliveries {
        name: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Send the endpoint every matching event after an event id again (0: all still kept).
    Replay {
        name: String,
        #[arg(long)]
        after: String,
    },
    /// Enable an endpoint disabled after failing too long.
    Enable { name: String },
}

#[derive(ClapArgs)]
pub struct EventsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Keep following: print each event as it happens, until interrupted. Reconnects by itself,
    /// resuming after the last event printed.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start after this event id (`0`: from the oldest event kept) [default: the oldest kept;
    /// with --follow, now].
    #[arg(long)]
    pub after: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Event types, comma-separated, such as task.failed,workflow.failed.
    #[arg(long = "type")]
    pub types: Option<String>,
    /// Most events to print without --follow.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// One event per line as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(ClapArgs, Clone)]
pub struct ConnectArgs {
    /// The server's URL; for several nodes of one deployment, comma-separate them and the
    /// command fails over between them.
    #[arg(long, env = "TASKWARDEN_URL", default_value = "http://127.0.0.1:7433", global = true)]
    pub url: String,
    /// The API token to send (needed once the server has any token).
    #[arg(long, env = "TASKWARDEN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for https:// servers (besides the system's).
    #[arg(long, env = "TASKWARDEN_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// A PEM client certificate, for servers that ask for one (mutual TLS); with --client-key.
    #[arg(long, env = "TASKWARDEN_CLIENT_CERT", global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "TASKWARDEN_CLIENT_KEY", global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(ClapArgs)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:7433].
    #[arg(long, env = "TASKWARDEN_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the embedded database [default: ./taskwarden-data].
    #[arg(long, env = "TASKWARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML config file; flags and environment variables override it.
    #[arg(long, env = "TASKWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// `full` (fsync every group commit; survives power loss) or `relaxed` (survives a process
    /// crash, not a machine crash) [default: full].
    #[arg(long, env = "TASKWARDEN_DURABILITY")]
    pub durability: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// This node's name, shown in /readyz and used for the leader lease [default: HOST-PID-RANDOM].
    #[arg(long, env = "TASKWARDEN_NODE_NAME")]
    pub node_name: Option<String>,
    /// How long the leader lease lasts unless renewed; another node takes over the background
    /// loops within about this long after the leader dies [default: 5s].
    #[arg(long, env = "TASKWARDEN_LEADER_LEASE", value_parser = humantime::parse_duration)]
    pub leader_lease: Option<Duration>,
    /// How long finished tasks and decided workflows are kept before they are deleted, or `forever`
    /// [default: 7days].
    #[arg(long, env = "TASKWARDEN_RETENTION")]
    pub retention: Option<String>,
    /// How often expired idempotency keys and work past retention are deleted [default: 60s].
    #[arg(long, env = "TASKWARDEN_PRUNE_INTERVAL", value_parser = humantime::parse_duration)]
    pub prune_interval: Option<Duration>,
    /// Priority aging: a ready task gains one priority level per this much waiting, so
    /// low-priority work waits a bounded time under a flood of high-priority work; `off` turns it
    /// off [default: 10s].
    #[arg(long, env = "TASKWARDEN_AGING")]
    pub aging: Option<String>,
    /// Do not apply schema migrations on start; refuse to start if the schema is behind.
    #[arg(long)]
    pub no_migrate: bool,
    /// Serve without authentication on an address other than loopback (logged loudly at every
    /// start). Without it, such a server refuses to start until a token exists.
    #[arg(long, env = "TASKWARDEN_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Host names the server answers for in Host and Origin, comma-separated (checked on every
    /// request when given) [default: the loopback names, checked while no token exists].
    #[arg(long, env = "TASKWARDEN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Reloaded on SIGHUP or when
    /// the file changes.
    #[arg(long, env = "TASKWARDEN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "TASKWARDEN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS); needs --tls-cert.
    #[arg(long, env = "TASKWARDEN_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Most time a client may take to send a request's headers [default: 10s].
    #[arg(long, env = "TASKWARDEN_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Most time a request's body may take to arrive [default: 30s].
    #[arg(long, env = "TASKWARDEN_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Option<Duration>,
    /// A kept-alive connection idle this long is closed [default: 60s].
    #[arg(long, env = "TASKWARDEN_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Most connections open at once; past it the longest-idle one is closed [default: 4096].
    #[arg(long, env = "TASKWARDEN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How deeply payloads and results may nest [default: 64].
    #[arg(long, env = "TASKWARDEN_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<usize>,
    /// How long audit log entries are kept, such as 90d [default: 90days].
    #[arg(long, env = "TASKWARDEN_AUDIT_RETENTION")]
    pub audit_retention: Option<String>,
    /// Keep no event log: state changes append no events, so there is no event stream, no
    /// per-minute history (`GET /v1/stats`) and no webhook deliveries; those answer 409. For
    /// deployments that use none of them. Give every node of a cluster the same setting.
    #[arg(long, env = "TASKWARDEN_NO_EVENT_LOG")]
    pub no_event_log: bool,
    /// How long the event log keeps events, such as 7d [default: 7days]. A stream resumes
    /// from any event still kept.
    #[arg(long, env = "TASKWARDEN_EVENT_RETENTION")]
    pub event_retention: Option<String>,
    /// How long the per-minute history of `GET /v1/stats` is kept, such as 30d [default: 7days].
    #[arg(long, env = "TASKWARDEN_STATS_RETENTION")]
    pub stats_retention: Option<String>,
    /// How often new events are rolled up into that history [default: 5s].
    #[arg(long, env = "TASKWARDEN_STATS_INTERVAL", value_parser = humantime::parse_duration)]
    pub stats_interval: Option<Duration>,
    /// What webhooks may be delivered to besides public addresses, comma-separated, as the
    /// worker's --fetch-allow: an address, a CIDR block, or an address and port. Repeatable.
    #[arg(long, env = "TASKWARDEN_WEBHOOK_ALLOW")]
    pub webhook_allow: Vec<String>,
    /// Also serve /metrics, alone and without a token, on this address (such as
    /// 127.0.0.1:9433), for a Prometheus that holds no token. /metrics on the API needs a read
    /// token.
    #[arg(long, env = "TASKWARDEN_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Count nothing for Prometheus: /metrics answers 404.
    #[arg(long, env = "TASKWARDEN_NO_METRICS")]
    pub no_metrics: bool,
    /// Send spans (submit, lease, report) over OTLP/HTTP to this collector, such as
    /// http://127.0.0.1:4318. Off by default.
    #[arg(long, env = "TASKWARDEN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Histogram buckets in seconds, as NAME=B1,B2,... where NAME is queue_wait, run or
    /// end_to_end; repeat for each [default: 1 ms doubling to about 4.4 minutes].
    #[arg(long = "metrics-buckets", env = "TASKWARDEN_METRICS_BUCKETS", value_delimiter = ';')]
    pub metrics_buckets: Vec<String>,
    /// Most distinct queues, and most distinct kinds, given series of their own in /metrics;
    /// the rest are counted as `other` [default: 100].
    #[arg(long, env = "TASKWARDEN_METRICS_LABEL_CAP")]
    pub metrics_label_cap: Option<usize>,
}

#[derive(ClapArgs)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown this once). With --data-dir or --database it
    /// is written straight into the store, without a server: how the first admin token is made.
    Create(TokenCreateArgs),
    /// List tokens: names, roles, scopes, created, last used, expiry (never a secret).
    Ls(TokenStoreArgs),
    /// Revoke a token by id or name; every node refuses it within a second.
    Revoke(TokenRevokeArgs),
}

/// Where a token command works: through a server (`--url`, an admin `--token`), or offline on
/// the store (`--data-dir` for the embedded one, `--database` for PostgreSQL).
#[derive(ClapArgs)]
pub struct TokenStoreArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Work on this embedded database directly, without a server.
    #[arg(long, conflicts_with = "database")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(ClapArgs)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// read, submit, worker, operator or admin.
    #[arg(long)]
    pub role: String,
    /// Its name, shown in lists and the audit log.
    #[arg(long)]
    pub name: String,
    /// The queues it may use, comma-separated names and prefixes (`billing.*,reports`) [default: all].
    #[arg(long, default_value = "*")]
    pub queues: String,
    /// Let a read token see payloads and results.
    #[arg(long)]
    pub payloads: bool,
    /// How long it lasts, such as 90d or 12h [default: no expiry].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
}

#[derive(ClapArgs)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// The token's id (tok_...) or name.
    #[arg(value_name = "TOKEN")]
    pub id: String,
}

#[derive(ClapArgs)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    Ls(AuditLsArgs),
}

#[derive(ClapArgs)]
pub struct AuditLsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Entries from this long ago, such as 1h or 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Most entries.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which database to use. Without `--database` the server uses the embedded SQLite store.
#[derive(ClapArgs, Clone, Default)]
pub struct DatabaseArgs {
    /// A PostgreSQL URL (postgres://user:password@host:port/database); several server nodes on
    /// the same database (and schema) share its tasks.
    #[arg(long, env = "TASKWARDEN_DATABASE_URL")]
    pub database: Option<String>,
    /// The PostgreSQL schema for Taskwarden's tables [default: taskwarden].
    #[arg(long, env = "TASKWARDEN_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// PostgreSQL connections this node keeps [default: 16].
    #[arg(long, env = "TASKWARDEN_DATABASE_POOL")]
    pub database_pool: Option<usize>,
    /// While PostgreSQL cannot be reached at start (it is starting too), keep trying this long,
    /// logging each try [default: 60s].
    #[arg(long, env = "TASKWARDEN_DATABASE_WAIT", value_parser = humantime::parse_duration)]
    pub database_wait: Option<Duration>,
}

#[derive(ClapArgs)]
pub struct BackupArgs {
    /// The embedded store's directory [default: ./taskwarden-data].
    #[arg(long, env = "TASKWARDEN_DATA_DIR", default_value = "taskwarden-data")]
    pub data_dir: PathBuf,
    /// The file to write (it must not exist).
    pub out: PathBuf,
}

#[derive(ClapArgs)]
pub struct RestoreArgs {
    /// A file `taskwarden backup` wrote.
    pub backup: PathBuf,
    /// The embedded store's directory to restore into [default: ./taskwarden-data].
    #[arg(long, env = "TASKWARDEN_DATA_DIR", default_value = "taskwarden-data")]
    pub data_dir: PathBuf,
    /// Replace the store already there (stop its server first).
    #[arg(long)]
    pub replace: bool,
}

#[derive(ClapArgs)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The embedded database's directory, when no --database is given [default: ./taskwarden-data].
    #[arg(long, env = "TASKWARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Apply migrations that drop data, too.
    #[arg(long)]
    pub allow_destructive: bool,
}

#[derive(ClapArgs)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Send each attempt's run span over OTLP/HTTP to this collector, such as
    /// http://127.0.0.1:4318. Off by default.
    #[arg(long, env = "TASKWARDEN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A queue to serve; repeat or comma-separate for several.
    #[arg(long, short, required = true, value_delimiter = ',')]
    pub queue: Vec<String>,
    /// Most tasks run at once.
    #[arg(long, short, default_value_t = 16)]
    pub concurrency: usize,
    /// Fetches in flight at once, so work keeps flowing while one is on its way back.
    #[arg(long, default_value_t = 2)]
    pub fetchers: usize,
    /// Most tasks leased beyond --concurrency, waiting here for a free slot (which then starts
    /// the next task at once): only as many as the slots start within 5 ms at the pace tasks
    /// have been running, so none once tasks take longer; 0 turns it off [default: 4 x
    /// --concurrency; none with --capacity].
    #[arg(long, env = "TASKWARDEN_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Started before its server, keep trying to reach it this long (logging each try) before
    /// giving up.
    #[arg(long, env = "TASKWARDEN_STARTUP_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub startup_wait: Duration,
    /// The worker's name [default: HOSTNAME-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// How long running tasks may finish after SIGTERM before their leases are released.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// What it can run at once, such as `cpu=8,gpu=1,memory_mb=16384`. Tasks that ask for
    /// resources are leased to it only while it has enough free.
    #[arg(long, default_value = "")]
    pub capacity: String,
    /// Its labels, such as `region=eu,gpu_model=a100`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// What the built-in http.fetch may reach besides public addresses, comma-separated: an
    /// address (`127.0.0.1`), a CIDR block (`10.0.0.0/8`) or an address and port
    /// (`127.0.0.1:8080`, `[::1]:8080`). Loopback, private, link-local (cloud metadata), CGNAT and
    /// similar addresses are refused otherwise. Repeatable; blank entries are skipped.
    #[arg(long, env = "TASKWARDEN_FETCH_ALLOW")]
    pub fetch_allow: Vec<String>,
    /// Most bytes of a response body http.fetch reads; the rest is not read [default: 1048576].
    #[arg(long)]
    pub fetch_max_bytes: Option<u64>,
    /// Longest one http.fetch may take, redirects and body included; a payload's `timeout_ms`
    /// may ask for less [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fetch_max_time: Option<Duration>,
    /// Most children one fan.out task may ask for [default: 99999, the server's own limit].
    #[arg(long)]
    pub fan_out_max: Option<u32>,
}

#[derive(ClapArgs)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub task: TaskOptions,
    /// Run no earlier than this from now (for example 5s, 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339, for example 2026-12-24T18:00:00Z); instead of
    /// --delay.
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<taskwarden_core::Timestamp>,
    /// Submitting again with the same key (within a day) returns the first task instead of a
    /// new one; the same key with a different queue, kind or payload is refused.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait for the task to finish and print it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (then exit 4, the id printed).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// Print the task as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
}

/// What a task is and how it runs: the options `submit` and `cron add` share.
#[derive(ClapArgs)]
pub struct TaskOptions {
    #[arg(long, short, default_value = "default")]
    pub queue: String,
    /// The handler name (for example echo, sleep, fail, fan.out, http.fetch).
    #[arg(long, short)]
    pub kind: String,
    /// The payload: JSON, `@FILE` for a file's contents, or `-` for standard input.
    #[arg(long, short, default_value = "null")]
    pub payload: String,
    /// Higher runs first among ready tasks of the queue (-1000 to 1000) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Attempts in all before the task fails for good [default: 3].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Execution timeout of one attempt (for example 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// How long a worker's lease lasts without a heartbeat before the task is given to another
    /// (for example 30s) [default: the server's, 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_timeout: Option<Duration>,
    /// Waits between attempts: MIN,MAX[,MULTIPLIER], for example 500ms,1m,2 (the wait starts at
    /// MIN and is multiplied after each failure, up to MAX, with 20% jitter) [default: 1s,5m,2].
    #[arg(long, value_parser = parse_backoff)]
    pub backoff: Option<taskwarden_core::Backoff>,
    /// A tag; repeat or comma-separate for several.
    #[arg(long, value_delimiter = ',')]
    pub tag: Vec<String>,
    /// Resources the worker must have free while it runs, such as `gpu=2,memory_mb=512`.
    #[arg(long, default_value = "")]
    pub resources: String,
    /// Labels the worker must have, such as `region=eu`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Counts against the queue's per-key concurrency limit (`queue set --key-concurrency`).
    #[arg(long)]
    pub concurrency_key: Option<String>,
    /// Counts against the queue's per-key rate limit (`queue set --key-rate`).
    #[arg(long)]
    pub rate_key: Option<String>,
    /// Drop the task as `expired` if no attempt has started by then: a duration from now (10m)
    /// or a time (RFC 3339); a cron schedule takes a duration, from each tick.
    #[arg(long, value_parser = parse_expires)]
    pub expires: Option<Expires>,
}

/// When a task expires unstarted: after a while, or at a time.
#[derive(Clone, Copy, Debug)]
pub enum Expires {
    In(Duration),
    At(taskwarden_core::Timestamp),
}

fn parse_expires(value: &str) -> Result<Expires, String> {
    if let Ok(d) = humantime::parse_duration(value) {
        return Ok(Expires::In(d));
    }
    taskwarden_core::Timestamp::from_rfc3339(value)
        .map(Expires::At)
        .ok_or_else(|| format!("{value:?} is neither a duration (10m) nor an RFC 3339 time"))
}

/// Which tasks a bulk `task retry` or `task cancel` acts on.
#[derive(ClapArgs, Default)]
pub struct BulkFilterArgs {
    #[arg(long)]
    pub queue: Option<String>,
    /// retry: failed (default), cancelled or expired; cancel: ready, scheduled or running (default all).
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// A search, e.g. 'payload.customer_id=42 error:timeout' (see docs/search.md).
    #[arg(long = "query", short = 'q')]
    pub q: Option<String>,
    /// Most tasks acted on [default: 10000; at most 100000]; with more, the answer says how to go
    /// on.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Go on from a previous bulk call.
    #[arg(long)]
    pub cursor: Option<String>,
}

impl BulkFilterArgs {
    pub fn is_empty(&self) -> bool {
        self.queue.is_none() && self.state.is_none() && self.kind.is_none() && self.tag.is_none() && self.q.is_none()
    }
}

#[derive(ClapArgs)]
pub struct TaskArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Show one task, with its attempts.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// scheduled, ready, running, succeeded, failed, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// A search, e.g. 'state:failed payload.customer_id=42 error:timeout' (see docs/search.md).
        #[arg(long = "query", short = 'q')]
        q: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The cursor printed by the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task (a running one is asked to stop), or with filters instead of an id, every
    /// unfinished task matching them, on the server, a page at a time.
    Cancel {
        /// The task; leave out and give filters to cancel in bulk.
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Send a failed or cancelled task back to the queue, or with filters instead of an id, every
    /// task matching them (failed ones unless --state cancelled).
    Retry {
        /// The task; leave out and give filters to retry in bulk.
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Wait for a task to finish; exits non-zero unless it succeeded.
    Wait {
        id: String,
        /// How long to wait (then exit 4); the same default as `workflow wait`.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Print the lines the task's handlers logged (every attempt's), or with --follow keep
    /// printing them as they come until the task finishes.
    Logs {
        id: String,
        #[arg(long, short = 'f')]
        follow: bool,
        /// One line per log line as JSON (with its seq, attempt and time).
        #[arg(long)]
        json: bool,
    },
    /// Follow a task live: each event (started, progress, retrying...) as it happens, then the
    /// outcome; exits non-zero unless it succeeded.
    Watch {
        id: String,
        /// Events and the outcome as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
pub struct WorkflowArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: WorkflowCommand,
}

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// List workflows, newest first.
    Ls {
        /// running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// From a previous page's "next page" line.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Submit a workflow from a JSON file (`-` for stdin); prints its id.
    Submit {
        file: PathBuf,
        /// Wait for the outcome and print the workflow.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Wait for a workflow's outcome; exits non-zero unless it succeeded.
    Wait {
        id: String,
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Follow a workflow live: each event of it and its tasks as it happens, then the outcome;
    /// exits non-zero unless it succeeded.
    Watch {
        id: String,
        /// Events and the outcome as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow: state, result, nodes and the speedup report.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel every unfinished task of a workflow.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a failed or cancelled workflow's failed and cancelled tasks again, and everything
    /// downstream of them; tasks that succeeded are kept, with their results, and not run again.
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(ClapArgs)]
pub struct KindsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: KindsCommand,
}

#[derive(Subcommand)]
pub enum KindsCommand {
    /// Each kind a live worker has a handler for: how many live workers run it, in which queues.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
pub struct QueueArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Every queue: ready, scheduled, running and failed counts, paused, oldest ready task's age,
    /// successes in the last minute.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Stop leasing from a queue (its tasks wait; submits are still accepted).
    Pause {
        queue: String,
        /// Set up a queue that holds no tasks yet (otherwise refused: a typo makes no queue).
        #[arg(long)]
        create: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lease from a paused queue again.
    Resume {
        queue: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel every ready task in a queue (with --scheduled, the delayed ones too), in pages on
    /// the server; running tasks are left to finish. Needs --yes.
    Purge {
        queue: String,
        /// Also cancel tasks waiting for their run_at (delayed, retrying, cron-made).
        #[arg(long)]
        scheduled: bool,
        /// Yes, cancel them.
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget an empty queue's settings (pause, weight, limits), so it is listed no more once
    /// idle; refused while it holds ready, scheduled or running tasks.
    Rm {
        queue: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a queue's settings; those not given stay as they are. Limits hold across all
    /// workers and server nodes; `none` removes one.
    Set {
        queue: String,
        /// Its share when a worker serves several queues (1 to 1000; default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// At most this many of its tasks run at once.
        #[arg(long)]
        concurrency: Option<String>,
        /// At most this many tasks with the same --concurrency-key run at once.
        #[arg(long)]
        key_concurrency: Option<String>,
        /// At most this many of its tasks start per period: 10/s, 600/m, 5/h, 3/500ms.
        #[arg(long)]
        rate: Option<String>,
        /// At most this many tasks with the same --rate-key start per period.
        #[arg(long)]
        key_rate: Option<String>,
        /// Set up a queue that holds no tasks yet (otherwise refused: a typo makes no queue).
        #[arg(long)]
        create: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
pub struct CronArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: CronCommand,
}

#[derive(Subcommand)]
pub enum CronCommand {
    /// Create a schedule: each tick submits the task, once, however many server nodes run.
    Add {
        name: String,
        /// Six fields, seconds first: `sec min hour day month weekday` ("0 */5 * * * *": every
        /// five minutes).
        #[arg(long)]
        schedule: String,
        /// An IANA time zone.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Ticks missed while no server ran: `skip`, or `catch-up=N` to fire the latest N.
        #[arg(long, default_value = "skip")]
        misfire: String,
        /// The task each tick submits.
        #[command(flatten)]
        task: Box<TaskOptions>,
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule: what is given replaces what it had (a new --schedule or --timezone
    /// moves its next tick); task options change its task template.
    Update {
        name: String,
        #[arg(long)]
        schedule: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        /// `skip`, or `catch-up=N`.
        #[arg(long)]
        misfire: Option<String>,
        /// A new payload for its task: JSON, `@FILE` or `-`.
        #[arg(long, short)]
        payload: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Fire a schedule now, once, besides its ticks; prints the task it submitted.
    Run {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List schedules with their next tick.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Stop a schedule's ticks until it is resumed.
    Pause {
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a schedule from its next tick (ticks while paused do not fire).
    Resume {
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (tasks it submitted stay).
    Rm {
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
pub struct DemoArgs {
    /// How many http.fetch tasks to run.
    #[arg(long, default_value_t = 200)]
    pub tasks: usize,
    /// Worker concurrency (two workers run).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(ClapArgs)]
pub struct BenchArgs {
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Tasks drained in the end-to-end measurement.
    #[arg(long, default_value_t = 100_000)]
    pub e2e_tasks: usize,
    /// Single submits per run in the concurrent-submit measurement.
    #[arg(long, default_value_t = 20_000)]
    pub submits: usize,
    /// Samples per run in the pickup-latency measurement.
    #[arg(long, default_value_t = 500)]
    pub latency_samples: usize,
    /// Server durability for the run: full or relaxed.
    #[arg(long, default_value = "full")]
    pub durability: String,
    /// Children in the fan-out measurement (a workflow of that many no-op tasks and a join).
    #[arg(long, default_value_t = 10_000)]
    pub fanout_children: usize,
    /// Run only these measurements (single, batch, e2e, latency, fanout, scheduling); all by default.
    /// `secure` (never run by default) compares two servers side by side in one run, plain HTTP
    /// against HTTPS with a token: single submits from one client, their drain by 2 x 16 slots,
    /// a 512-slot drain, pickup latency. `observe` (never run by default) does the same for a
    /// server with no event log or metrics against one with both, one SSE subscriber and a
    /// scrape of /metrics a second. `shape` (never run by default) measures the shape
    /// users run: one client submitting one task per call, a drain by 2 worker processes of 16
    /// slots, pickup at 100 tasks/s, next to the disk's (or database's) own commit rate and the
    /// 512-slot drain.
    /// `retention` (never run by default) is a soak instead: waves of tasks through a server with
    /// a one-second retention, printing the stored size after each wave.
    /// `backlog` (never run by default) drains a backlog of --backlog-tasks beside one a tenth its
    /// size on the same server, with the server's memory after each.
    /// `search` (never run by default) times the task search with --search-tasks tasks stored.
    /// `stream` (never run by default) runs --e2e-tasks tasks through a server, then reads the
    /// whole event log as one SSE subscriber and prints the server's CPU time per event sent.
    /// `chaos` (never run by default) runs a mixed workload for --duration while a nemesis kills
    /// and pauses workers, nodes and PostgreSQL, then checks the history's invariants; it exits
    /// non-zero if any is broken.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Follow the event log with one Server-Sent Events subscriber for the whole run (on the
    /// first node), and print how many events it received. An environment variable too, so
    /// that `bench/compare.sh` can ask it of the newer build while an older one, which has no
    /// event stream, ignores it.
    #[arg(long, env = "TASKWARDEN_BENCH_SUBSCRIBE")]
    pub subscribe: bool,
    /// Tasks per run in the users' shape (`--only shape`).
    #[arg(long, default_value_t = 20_000)]
    pub shape_tasks: usize,
    /// The large backlog in `--only backlog`, drained beside one a tenth of its size.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog_tasks: usize,
    /// How long `--only chaos` runs its workload and nemesis before checking the history.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Tasks stored for `--only search`.
    #[arg(long, default_value_t = 1_000_000)]
    pub search_tasks: usize,
    /// Waves of tasks in the retention soak.
    #[arg(long, default_value_t = 30)]
    pub soak_waves: usize,
    /// Tasks per wave in the retention soak.
    #[arg(long, default_value_t = 5000)]
    pub soak_tasks: usize,
    /// Benchmark on this PostgreSQL (in a fresh schema, dropped afterwards) instead of SQLite.
    #[arg(long)]
    pub database: Option<String>,
    /// Server nodes to start on the PostgreSQL database. Submits go to the first node, the
    /// pickup-latency worker listens on the last (so pickup crosses nodes), and end to end runs
    /// one worker process per node.
    #[arg(long, default_value_t = 1, requires = "database")]
    pub nodes: usize,
}

/// `--backoff MIN,MAX[,MULTIPLIER]`.
fn parse_backoff(value: &str) -> Result<taskwarden_core::Backoff, String> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let duration = |s: &str| humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"));
    let (min, max, multiplier) = match parts.as_slice() {
        [min, max] => (duration(min)?, duration(max)?, 2.0),
        [min, max, m] => (duration(min)?, duration(max)?, m.parse().map_err(|e| format!("multiplier {m:?}: {e}"))?),
        _ => return Err("give MIN,MAX or MIN,MAX,MULTIPLIER, for example 500ms,1m,2".into()),
    };
    Ok(taskwarden_core::Backoff { min, max, multiplier, ..Default::default() })
}
