//! The PostgreSQL backend: one database shared by any number of server nodes.
//!
//! - `schema`: versioned migrations, applied under an advisory lock so nodes may start together.
//! - `rows`: the mapping between rows and core types (a task is a JSON document plus the columns
//!   that queries filter and sort on).
//! - `ops`: task operations. Each runs in one transaction that locks the rows it changes
//!   (`FOR UPDATE`, or `SKIP LOCKED` where any row will do), applies the core's transition and
//!   writes the rows back in one statement.
//! - `workflows`: workflow DAGs, the same rules as the embedded store.
//! - `workflow_retry`: running a decided workflow's failed part again.
//! - `access`: API tokens (their hashes) and the audit log.
//! - `listen`: wake-ups that cross nodes, by LISTEN/NOTIFY.
//!
//! Nodes share nothing but the database: every decision that must be made once (a lease, a
//! workflow's outcome, the leader of the background loops) is a row lock or a conditional write.

mod access;
mod events;
mod listen;
mod ops;
#[cfg(feature = "conformance")]
pub mod plans;
mod rows;
mod scheduling;
mod schema;
mod stats;
mod task_logs;
mod webhooks;
mod workflow_retry;
mod workflows;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskwarden_core::auth::{AuditEntry, TokenRecord};
use taskwarden_core::cron::CronInfo;
use taskwarden_core::events::{Event, EventId};
use taskwarden_core::protocol::{LeaseStatus, QueueInfo, WorkerInfo};
use taskwarden_core::workflow::{FanOut, ParentResult, Workflow, WorkflowState};
use taskwarden_core::{IdGenerator, Task, TaskId, Timestamp, TransitionError};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::params::*;
use crate::topics::{Topics, topic_index};
use crate::{Result, Store, StoreError};

/// How long a woken fetch for a fully loaded worker waits before asking, so that less loaded
/// workers ask first (a fetch for an idle worker asks at once).
const LOAD_DELAY: Duration = Duration::from_millis(20);

/// Task row versions written by a node before it vacuums the task table (see
/// `PgStore::vacuum_if_churned`), and the least time between two such vacuums.
const VACUUM_CHURN: u64 = 50_000;
const VACUUM_EVERY: Duration = Duration::from_secs(5);

/// Workers heard from (registered, fetched or heartbeated) within this long count as live when a
/// woken fetch asks whether a less loaded worker could take its task. Idle workers heartbeat
/// every 5 s.
const LIVE_WINDOW: Duration = Duration::from_secs(30);

pub use schema::MigrationReport;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// A `postgres://user:password@host:port/database` URL (or key=value connection string).
    pub url: String,
    /// The schema Taskwarden's tables live in; created if missing. Several deployments (or test
    /// runs) can share a database by using different schemas.
    pub schema: String,
    /// Connections this node keeps open.
    pub pool_size: usize,
    /// How long a request waits for a connection (or for the database to answer a connect)
    /// before it fails as unavailable.
    pub connect_timeout: Duration,
    /// Apply pending migrations on open. When false, opening fails if the schema is behind.
    pub migrate: bool,
    /// A ready task gains one priority level per this much waiting, so low-priority work waits a
    /// bounded time under a flood of high-priority work; `None` turns aging off.
    pub aging: Option<Duration>,
    /// Keep the event log (on by default). Off, this node's state changes append no events.
    /// Every node of a cluster should agree: a stream shows only what the nodes that keep the
    /// log appended.
    pub event_log: bool,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: "taskwarden".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            migrate: true,
            aging: Some(crate::DEFAULT_AGING),
            event_log: true,
        }
    }
}

/// Errors inside the backend: a store error, or a database error that may be worth a retry.
pub(crate) enum Fail {
    Store(StoreError),
    Db(tokio_postgres::Error),
    /// A row changed between an optimistic read and its write: run the transaction again.
    Changed,
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<TransitionError> for Fail {
    fn from(e: TransitionError) -> Self {
        Fail::Store(e.into())
    }
}

impl Fail {
    /// Deadlocks and serialization failures: the transaction did nothing and can run again.
    fn retryable(&self) -> bool {
        match self {
            Fail::Db(e) => {
                matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
            }
            Fail::Changed => true,
            Fail::Store(_) => false,
        }
    }

    fn into_store(self) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Db(e) => db_error(e),
            Fail::Changed => StoreError::Unavailable("tasks kept changing under a write; retry".into()),
        }
    }
}

/// A database error as callers see it: anything that is not the database refusing a statement
/// (a lost connection, a server shutting down or starting up) is "unavailable", worth a retry.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    let why = describe(&e);
    match e.code() {
        Some(code) if code.code().starts_with("08") || code.code().starts_with("57") => StoreError::Unavailable(why),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(why),
        Some(_) => StoreError::Internal(why),
        None => StoreError::Unavailable(why),
    }
}

/// A driver error in words. tokio-postgres's own message names only the kind of error ("db
/// error", "error connecting to server"): what the database said, or the I/O error underneath,
/// is in its source.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let hint = match *db.code() == SqlState::INVALID_CATALOG_NAME {
            true => " (create it first, for example with createdb, or name another in the URL)",
            false => "",
        };
        return format!("{} {}: {}{hint}", db.severity(), db.code().code(), db.message());
    }
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        words.push_str(": ");
        words.push_str(&c.to_string());
        cause = c.source();
    }
    words
}

pub(crate) type PgResult<T> = std::result::Result<T, Fail>;

/// Topics a transaction touched, announced after it commits.
#[derive(Default)]
pub(crate) struct Touched([bool; 3]);

impl Touched {
    pub fn touch(&mut self, topic: Topic) {
        self.0[topic_index(topic)] = true;
    }

    pub fn touch_for(&mut self, task: &Task) {
        if let Some(topic) = Topic::of(task.state) {
            self.touch(topic);
        }
    }

    fn any(&self) -> bool {
        self.0.iter().any(|t| *t)
    }

    /// The NOTIFY payload: one letter per touched topic.
    fn payload(&self) -> String {
        self.0.iter().zip(['r', 's', 'f']).filter(|(hit, _)| **hit).map(|(_, c)| c).collect()
    }
}

/// Ids and random numbers for this node; UUIDv7's random bits keep nodes' ids apart.
pub(crate) struct Ids {
    ids: IdGenerator,
    rng: StdRng,
}

impl Ids {
    pub fn next(&mut self, now: Timestamp) -> TaskId {
        let random = self.rng.random();
        self.ids.next(now, random)
    }

    pub fn random<T>(&mut self) -> T
    where
        rand::distr::StandardUniform: rand::distr::Distribution<T>,
    {
        self.rng.random()
    }
}

pub(crate) struct Shared {
    pub ids: Mutex<Ids>,
    pub channel: String,
    /// Tasks this node leased per queue, for the weighted fair share of multi-queue fetches.
    pub leased: Mutex<std::collections::BTreeMap<String, u64>>,
    pub aging: Option<Duration>,
    /// Append events (`PgConfig::event_log`).
    pub event_log: bool,
    /// Task row versions this node wrote since it last started a vacuum (see `vacuum_if_churned`).
    pub churn: std::sync::atomic::AtomicU64,
    /// When this node last started one, and whether one is running.
    pub vacuumed_at: Mutex<Option<tokio::time::Instant>>,
    pub vacuuming: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    pub fn next_id(&self, now: Timestamp) -> TaskId {
        self.ids.lock().expect("id generator lock").next(now)
    }

    pub fn random<T>(&self) -> T
    where
        rand::distr::StandardUniform: rand::distr::Distribution<T>,
    {
        self.ids.lock().expect("id generator lock").random()
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    topics: Arc<Topics>,
    shared: Shared,
    /// How long `ready` waits for its commit.
    connect_timeout: Duration,
    // Dropping it stops the listener.
    _stop: watch::Sender<()>,
}

fn pg_config(config: &PgConfig) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config =
        config.url.parse().map_err(|e| StoreError::Internal(format!("bad database URL: {e}")))?;
    pg.options(format!("-c search_path={} -c client_min_messages=warning", config.schema));
    pg.connect_timeout(config.connect_timeout);
    pg.application_name("taskwarden");
    // A database cut off without a word (its packets dropped, as across a partition) must not
    // hold requests for the kernel's quarter of an hour of retransmissions: data it has not
    // acknowledged fails the connection after 10 s, and an idle one is probed after 5 s. (The
    // URL's own `tcp_user_timeout` / `keepalives_idle` win.)
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(Duration::from_secs(10));
    }
    if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        pg.keepalives_idle(Duration::from_secs(5)).keepalives_interval(Duration::from_secs(2)).keepalives_retries(3);
    }
    Ok(pg)
}

fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Internal(format!(
            "bad schema name {schema:?}: use lowercase letters, digits and underscores (at most 48)"
        )))
    }
}

impl PgStore {
    /// Connects, applies pending migrations (unless `config.migrate` is off) and starts listening
    /// for other nodes' wake-ups.
    pub async fn open(config: PgConfig) -> Result<PgStore> {
        valid_schema(&config.schema)?;
        let pg = pg_config(&config)?;
        if config.migrate {
            schema::migrate(&pg, &config.schema, false).await?;
        } else {
            schema::check(&pg, &config.schema).await?;
        }
        let manager =
            Manager::from_config(pg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("connection pool: {e}")))?;
        let topics = Arc::new(Topics::new());
        let channel = format!("taskwarden_{}", config.schema);
        let (stop, stopped) = watch::channel(());
        let (listening, listens) = tokio::sync::oneshot::channel();
        tokio::spawn(listen::run(pg, channel.clone(), topics.clone(), stopped, listening));
        // Serve only once other nodes' wake-ups reach us (the listener keeps trying if not yet).
        if tokio::time::timeout(config.connect_timeout, listens).await.is_err() {
            tracing::warn!("not yet listening for other nodes' wake-ups; carrying on");
        }
        let ids = Ids { ids: IdGenerator::default(), rng: StdRng::from_os_rng() };
        Ok(PgStore {
            pool,
            topics,
            connect_timeout: config.connect_timeout,
            shared: Shared {
                ids: Mutex::new(ids),
                channel,
                leased: Mutex::default(),
                aging: config.aging,
                event_log: config.event_log,
                churn: Default::default(),
                vacuumed_at: Mutex::default(),
                vacuuming: Default::default(),
            },
            _stop: stop,
        })
    }

    /// Applies pending migrations and reports what it did. `allow_destructive` must be set for a
    /// migration that drops data.
    pub async fn migrate(config: &PgConfig, allow_destructive: bool) -> Result<MigrationReport> {
        valid_schema(&config.schema)?;
        schema::migrate(&pg_config(config)?, &config.schema, allow_destructive).await
    }

    /// Drops the schema and everything in it. For benchmarks and tests that made a schema of
    /// their own; nothing in the server calls it.
    pub async fn drop_schema(config: &PgConfig) -> Result<()> {
        valid_schema(&config.schema)?;
        schema::drop(&pg_config(config)?, &config.schema).await
    }

    /// Vacuums (and analyzes) the task table once this node has written enough row versions since
    /// the last time, new rows included, in the background, at most every [`VACUUM_EVERY`].
    ///
    /// Why: every lease and every outcome writes a new version of a task's row and leaves the old
    /// one dead, with its entries in the ready index. Until a vacuum clears them, each fetch steps
    /// over the dead entries of the tasks leased before it, so a fast drain slows down the longer
    /// it runs. Autovacuum looks at a table at most once a minute (its naptime), by which time a
    /// busy node has written hundreds of thousands of versions; the periodic compaction runs
    /// once per prune interval. This keeps the cost of a fetch flat in between.
    fn vacuum_if_churned(&self) {
        use std::sync::atomic::Ordering;
        if self.shared.churn.load(Ordering::Relaxed) < VACUUM_CHURN {
            return;
        }
        {
            let mut at = self.shared.vacuumed_at.lock().expect("vacuum clock lock");
            if at.is_some_and(|t| t.elapsed() < VACUUM_EVERY) || self.shared.vacuuming.swap(true, Ordering::SeqCst) {
                return;
            }
            *at = Some(tokio::time::Instant::now());
        }
        self.shared.churn.store(0, Ordering::Relaxed);
        let (pool, running) = (self.pool.clone(), self.shared.vacuuming.clone());
        tokio::spawn(async move {
            if let Ok(c) = pool.get().await
                && let Err(e) = c.batch_execute("VACUUM (ANALYZE, SKIP_LOCKED) tasks").await
            {
                tracing::warn!(error = %e, "vacuuming the task table failed");
            }
            running.store(false, Ordering::SeqCst);
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => db_error(e),
            other => StoreError::Unavailable(format!("no database connection: {other}")),
        })
    }
}

/// Runs `$body` in a transaction on a pooled connection, with `$tx` the transaction and `$st`
/// the topics it touches; commits, announces the topics, and runs the whole again (at most a few
/// times) if the database broke a deadlock by aborting it.
macro_rules! transaction {
    ($store:expr, |$tx:ident, $st:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut tries = 0u32;
        loop {
            let mut client = store.client().await?;
            let $tx = match client.transaction().await {
                Ok(tx) => tx,
                Err(e) => break Err(db_error(e)),
            };
            let mut touched = Touched::default();
            let outcome: PgResult<_> = {
                let $st = &mut touched;
                async { $body }.await
            };
            let outcome = match outcome {
                Ok(value) if touched.any() => {
                    // Prepared once per connection, like every other statement: a plain `execute`
                    // with SQL text would prepare it anew, one more round trip each time.
                    match rows::execute(&$tx, "SELECT pg_notify($1, $2)", &[&store.shared.channel, &touched.payload()])
                        .await
                    {
                        Ok(_) => Ok(value),
                        Err(e) => Err(Fail::from(e)),
                    }
                }
                other => other,
            };
            let outcome = match outcome {
                Ok(value) => $tx.commit().await.map(|_| value).map_err(Fail::from),
                Err(e) => {
                    // Rolled back here rather than on drop, which only queues the ROLLBACK while
                    // the connection goes straight back to the pool: a fetch right after refused
                    // concurrent workflow retries was seen to miss a row committed just before
                    // (conformance case `a_cancelled_workflow_is_retried_once_however_many_ask_at_once`).
                    let _ = $tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Ok(value) => {
                    store.topics.announce(touched.0);
                    break Ok(value);
                }
                Err(e) if e.retryable() && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(tries))).await;
                }
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

/// Runs `$body` with `$c` a pooled connection, outside any transaction.
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let $c = $store.client().await?;
        let outcome: PgResult<_> = async { $body }.await;
        outcome.map_err(Fail::into_store)
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn submit(&self, p: SubmitTasks) -> Result<Vec<Submitted>> {
        // New rows count as churn too: after a large enqueue the planner must learn that the
        // table is no longer (nearly) empty, or the first fetches of the drain that follows sort
        // every ready task instead of reading the ready index in order (seen in the benchmark:
        // the same drain ran at half the rate, or not, depending on when statistics caught up).
        let n = p.tasks.len() as u64;
        let submitted = if !p.tasks.is_empty() && p.tasks.iter().all(|t| t.idempotency_key.is_none()) {
            let (submitted, touched) = read!(self, |c| ops::submit_plain(&c, &self.shared, &p).await)?;
            self.topics.announce(touched.0);
            Ok(submitted)
        } else {
            transaction!(self, |tx, st| ops::submit(&tx, st, &self.shared, &p).await)
        };
        self.shared.churn.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.vacuum_if_churned();
        submitted
    }

    async fn get(&self, id: TaskId) -> Result<Task> {
        read!(self, |c| ops::get(&c, id).await)
    }

    async fn list(&self, p: ListTasks) -> Result<TaskPage> {
        read!(self, |c| ops::list(&c, &p).await)
    }

    async fn cancel(&self, p: CancelTask) -> Result<Cancelled> {
        transaction!(self, |tx, st| ops::cancel(&tx, st, &self.shared, &p).await)
    }

    async fn retry(&self, p: RetryTask) -> Result<Task> {
        transaction!(self, |tx, st| ops::retry(&tx, st, &self.shared, &p).await)
    }

    async fn fetch(&self, p: FetchTasks) -> Result<Vec<Task>> {
        let mut ready = self.topics.subscribe(Topic::Ready);
        let mut finished = self.topics.subscribe(Topic::Finished);
        let deadline = tokio::time::Instant::now() + p.wait;
        // Leases start at the caller's time, moved on by however long the fetch has waited.
        let started = tokio::time::Instant::now();
        let mut now = p.now;
        let mut woken = false;
        loop {
            ready.borrow_and_update();
            finished.borrow_and_update();
            if woken {
                // Every parked fetch on every node wakes at once: the less loaded its worker,
                // the sooner it asks, so the least-loaded worker tends to get the task.
                let live_since = now.saturating_sub(LIVE_WINDOW);
                let (load, rivals) = read!(self, |c| scheduling::load(&c, &p.worker_id, &p.queues, live_since).await)
                    .unwrap_or((0.0, false));
                // An idle worker's fetch asks at once (even a zero sleep waits for the timer's
                // next tick, up to a millisecond), and so does a busy one that no other worker
                // could yield to: the delay only ever serves to let a less loaded one go first.
                if load > 0.0 && rivals {
                    tokio::time::sleep(LOAD_DELAY.mul_f64(load.min(1.0))).await;
                }
                now = p.now.saturating_add(started.elapsed());
            }
            let fetched = transaction!(self, |tx, st| ops::fetch(&tx, st, &self.shared, &p, now).await)?;
            if !fetched.tasks.is_empty() || p.wait.is_zero() {
                return Ok(fetched.tasks);
            }
            if !fetched.hold.is_none() {
                // Limits held every candidate back: wait for them, not for new tasks.
                if !crate::admission::wait_out(fetched.hold, &mut ready, &mut finished, deadline).await {
                    return Ok(Vec::new());
                }
            } else {
                tokio::select! {
                    changed = ready.changed() => if changed.is_err() { return Ok(Vec::new()) },
                    _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                }
                woken = true;
            }
            now = p.now.saturating_add(started.elapsed());
        }
    }

    async fn heartbeat(&self, p: Heartbeat) -> Result<Vec<LeaseStatus>> {
        transaction!(self, |tx, st| ops::heartbeat(&tx, st, &self.shared, &p).await)
    }

    async fn report(&self, p: ReportOutcomes) -> Result<Vec<Result<Task>>> {
        let outcomes = transaction!(self, |tx, st| ops::report(&tx, st, &self.shared, &p).await);
        self.vacuum_if_churned();
        outcomes
    }

    async fn expire_leases(&self, p: ExpireLeases) -> Result<usize> {
        transaction!(self, |tx, st| ops::expire_leases(&tx, st, &self.shared, &p).await)
    }

    async fn expire_unstarted(&self, p: ExpireLeases) -> Result<usize> {
        transaction!(self, |tx, st| ops::expire_unstarted(&tx, st, &self.shared, &p).await)
    }

    async fn promote_due(&self, p: PromoteDue) -> Result<Promoted> {
        transaction!(self, |tx, st| ops::promote_due(&tx, st, &self.shared, &p).await)
    }

    async fn prune_expired(&self, p: PruneExpired) -> Result<usize> {
        transaction!(self, |tx, _st| ops::prune_expired(&tx, &p).await)
    }

    async fn prune_finished(&self, p: PruneFinished) -> Result<usize> {
        transaction!(self, |tx, _st| ops::prune_finished(&tx, &p).await)
    }

    async fn compact(&self) -> Result<()> {
        // One statement, outside any transaction (VACUUM cannot run in one); tables another
        // vacuum holds are skipped this time.
        read!(self, |c| {
            c.batch_execute("VACUUM (ANALYZE, SKIP_LOCKED) tasks, idempotency_keys, task_edges, workflows, fanouts")
                .await?;
            Ok(())
        })
    }

    async fn acquire_lease(&self, p: AcquireLease) -> Result<LeaseHolder> {
        transaction!(self, |tx, _st| ops::acquire_lease(&tx, &p).await)
    }

    async fn read_events(&self, p: ReadEvents) -> Result<Vec<Event>> {
        read!(self, |c| events::read(&c, &p).await)
    }

    async fn read_event_measures(&self, p: ReadEvents) -> Result<Vec<taskwarden_core::stats::Measured>> {
        let measures = read!(self, |c| events::read_measures(&c, &p).await)?;
        Ok(measures.into_iter().map(taskwarden_core::stats::Measured::Event).collect())
    }

    async fn last_event_id(&self) -> Result<EventId> {
        read!(self, |c| events::last_id(&c).await)
    }

    async fn prune_events(&self, p: PruneEvents) -> Result<usize> {
        read!(self, |c| events::prune(&c, &p).await)
    }

    async fn stats_position(&self) -> Result<EventId> {
        read!(self, |c| stats::position(&c).await)
    }

    async fn add_stats(&self, p: AddStats) -> Result<()> {
        transaction!(self, |tx, _st| stats::add(&tx, &p).await)
    }

    async fn read_stats(&self, p: ReadStats) -> Result<Vec<taskwarden_core::stats::StatsRow>> {
        read!(self, |c| stats::read(&c, &p).await)
    }

    async fn prune_stats(&self, before: Timestamp) -> Result<usize> {
        read!(self, |c| stats::prune(&c, before).await)
    }

    async fn create_webhook(&self, w: taskwarden_core::webhooks::Webhook) -> Result<()> {
        read!(self, |c| webhooks::create(&c, &w).await)
    }

    async fn list_webhooks(&self) -> Result<Vec<taskwarden_core::webhooks::Webhook>> {
        read!(self, |c| webhooks::list(&c).await)
    }

    async fn save_webhook(&self, w: taskwarden_core::webhooks::Webhook, if_position: Option<EventId>) -> Result<()> {
        read!(self, |c| webhooks::save(&c, &w, if_position).await)
    }

    async fn delete_webhook(&self, name: &str) -> Result<()> {
        transaction!(self, |tx, _st| webhooks::delete(&tx, name).await)
    }

    async fn record_delivery(&self, d: taskwarden_core::webhooks::Delivery) -> Result<()> {
        read!(self, |c| webhooks::record(&c, &d).await)
    }

    async fn list_deliveries(&self, p: ListDeliveries) -> Result<Vec<taskwarden_core::webhooks::Delivery>> {
        read!(self, |c| webhooks::deliveries(&c, &p).await)
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<usize> {
        read!(self, |c| webhooks::prune(&c, before).await)
    }

    async fn task_logs(&self, p: ReadTaskLogs) -> Result<Vec<taskwarden_core::task_logs::TaskLogLine>> {
        read!(self, |c| task_logs::read(&c, &p).await)
    }

    async fn ready_needs(&self) -> Result<Vec<ReadyNeeds>> {
        read!(self, |c| scheduling::ready_needs(&c).await)
    }

    async fn ready_kinds(&self) -> Result<Vec<ReadyKind>> {
        read!(self, |c| scheduling::ready_kinds(&c).await)
    }

    async fn kind_schemas(&self) -> Result<Vec<KindSchema>> {
        read!(self, |c| scheduling::kind_schemas(&c).await)
    }

    async fn create_cron(&self, p: CreateCron) -> Result<CronInfo> {
        transaction!(self, |tx, _st| scheduling::create_cron(&tx, &p).await)
    }

    async fn list_crons(&self) -> Result<Vec<CronInfo>> {
        read!(self, |c| scheduling::list_crons(&c).await)
    }

    async fn pause_cron(&self, p: PauseCron) -> Result<CronInfo> {
        transaction!(self, |tx, _st| scheduling::pause_cron(&tx, &p).await)
    }

    async fn update_cron(&self, p: UpdateCron) -> Result<CronInfo> {
        transaction!(self, |tx, _st| scheduling::update_cron(&tx, &p).await)
    }

    async fn delete_cron(&self, name: &str) -> Result<()> {
        transaction!(self, |tx, _st| scheduling::delete_cron(&tx, name).await)
    }

    async fn fire_cron(&self, p: FireCron) -> Result<bool> {
        transaction!(self, |tx, st| scheduling::fire_cron(&tx, st, &self.shared, &p).await)
    }

    async fn register_worker(&self, p: RegisterWorker) -> Result<WorkerInfo> {
        transaction!(self, |tx, _st| ops::register_worker(&tx, &self.shared, &p).await)
    }

    async fn update_queue(&self, p: UpdateQueue) -> Result<()> {
        transaction!(self, |tx, st| ops::update_queue(&tx, st, &self.shared, &p).await)
    }

    async fn list_queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        read!(self, |c| ops::queues(&c, now, true).await)
    }

    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        read!(self, |c| ops::queues(&c, now, false).await)
    }

    async fn remove_queue(&self, name: &str) -> Result<()> {
        transaction!(self, |tx, _st| ops::remove_queue(&tx, name).await)
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        read!(self, |c| ops::workers(&c).await)
    }

    async fn remove_worker(&self, p: RemoveWorker) -> Result<()> {
        transaction!(self, |tx, _st| ops::remove_worker(&tx, &p).await)
    }

    async fn worker_owner(&self, worker_id: &str) -> Result<Option<String>> {
        read!(self, |c| access::worker_owner(&c, worker_id).await)
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenRecord> {
        transaction!(self, |tx, _st| access::create_token(&tx, &token).await)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        read!(self, |c| access::list_tokens(&c).await)
    }

    async fn revoke_token(&self, p: RevokeToken) -> Result<TokenRecord> {
        transaction!(self, |tx, _st| access::revoke_token(&tx, &p).await)
    }

    async fn touch_tokens(&self, p: TouchTokens) -> Result<()> {
        transaction!(self, |tx, _st| access::touch_tokens(&tx, &p).await)
    }

    async fn record_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        transaction!(self, |tx, _st| access::record_audit(&tx, &entries).await)
    }

    async fn list_audit(&self, p: ListAudit) -> Result<Vec<AuditEntry>> {
        read!(self, |c| access::list_audit(&c, &p).await)
    }

    async fn prune_audit(&self, before: Timestamp) -> Result<usize> {
        transaction!(self, |tx, _st| access::prune_audit(&tx, before).await)
    }

    async fn submit_workflow(&self, p: SubmitWorkflow) -> Result<Workflow> {
        transaction!(self, |tx, st| workflows::submit(&tx, st, &self.shared, &p).await)
    }

    async fn get_workflow(&self, id: TaskId) -> Result<Workflow> {
        read!(self, |c| workflows::get(&c, id).await)
    }

    async fn list_workflows(&self, p: ListWorkflows) -> Result<WorkflowPage> {
        read!(self, |c| workflows::list(&c, &p).await)
    }

    async fn workflow_state(&self, id: TaskId) -> Result<WorkflowState> {
        read!(self, |c| workflows::state(&c, id).await)
    }

    async fn cancel_workflow(&self, p: CancelWorkflow) -> Result<Workflow> {
        transaction!(self, |tx, st| workflows::cancel(&tx, st, &self.shared, &p).await)
    }

    async fn retry_workflow(&self, p: RetryWorkflow) -> Result<Workflow> {
        transaction!(self, |tx, st| workflow_retry::retry(&tx, st, &self.shared, &p).await)
    }

    async fn fan_out(&self, p: FanOutTasks) -> Result<FanOut> {
        transaction!(self, |tx, st| workflows::fan_out(&tx, st, &self.shared, &p).await)
    }

    async fn parents(&self, p: ListParents) -> Result<Vec<ParentResult>> {
        read!(self, |c| workflows::parents(&c, &p).await)
    }

    fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.topics.subscribe(topic)
    }

    async fn ready(&self) -> Result<()> {
        // Not on a standby, nor in a database set read-only; and a commit that takes a
        // transaction id, which waits for a synchronous standby if one is named. So a node that
        // cannot commit is not ready (within the connect timeout).
        let probe = async {
            read!(self, |c| {
                let read_only: String =
                    c.query_one("SELECT current_setting('transaction_read_only')", &[]).await?.get(0);
                if read_only != "on" {
                    c.simple_query("BEGIN; SELECT txid_current(); COMMIT").await?;
                }
                Ok(read_only == "on")
            })
        };
        match tokio::time::timeout(self.connect_timeout, probe).await {
            Ok(Ok(false)) => Ok(()),
            Ok(Ok(true)) => {
                Err(StoreError::Unavailable("the database is read-only (transaction_read_only is on)".into()))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable("the database did not commit in time".into())),
        }
    }

    async fn database_time(&self) -> Result<Option<Timestamp>> {
        read!(self, |c| {
            let row = c.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8", &[]).await?;
            Ok(Some(Timestamp::from_micros(row.get(0))))
        })
    }
}
