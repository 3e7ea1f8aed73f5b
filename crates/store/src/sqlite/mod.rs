//! The embedded backend: one SQLite file in WAL mode.
//!
//! - `writer`: the single writer thread and its group commit (small writes that find it idle
//!   run on their caller's thread).
//! - `checkpoint`: copying the write-ahead log back into the database, off the write path.
//! - `ops`: write operations (run under the writer's lock).
//! - `handoff`: parked fetches, served the moment tasks become ready.
//! - `reads`: queries (run on a pool of reader connections).
//! - `rows`: the mapping between rows and core types.
//! - `workflows`: workflow DAGs: storing them, releasing children, deciding outcomes.
//! - `workflow_retry`: running a decided workflow's failed part again.
//! - `access`: API tokens (their hashes) and the audit log.
//! - `schema`: versioned migrations.

mod access;
mod backup;
mod checkpoint;
mod events;
mod handoff;
mod ledger;
mod ops;
mod reads;
mod rows;
mod scheduling;
mod schema;
mod stats;
mod task_logs;
mod webhooks;
mod workflow_retry;
mod workflows;
mod writer;

pub use backup::BackupReport;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use taskwarden_core::auth::{AuditEntry, TokenRecord};
use taskwarden_core::cron::CronInfo;
use taskwarden_core::events::{Event, EventId, StoredEvent};
use taskwarden_core::protocol::{LeaseStatus, QueueInfo, WorkerInfo};
use taskwarden_core::workflow::{FanOut, ParentResult, Workflow, WorkflowState};
use taskwarden_core::{Task, TaskId, Timestamp};
use tokio::sync::watch;

use crate::admission;
use crate::params::*;
use crate::topics::Topics;
use crate::{DEFAULT_AGING, Result, Store, StoreError};
use checkpoint::Checkpointer;
use writer::Writer;

/// How hard a commit works to survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Commits that acknowledge a submit or a completion fsync the write-ahead log before the
    /// caller hears back (one fsync per group of concurrent commits). Survives power loss.
    #[default]
    Full,
    /// No fsync on commit. Survives a crash of the server process (`kill -9`), since the data is
    /// in the operating system's cache, but the last commits may be lost if the machine itself
    /// crashes or loses power.
    Relaxed,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(Durability::Full),
            "relaxed" => Ok(Durability::Relaxed),
            other => Err(format!("unknown durability {other:?}; expected full or relaxed")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; created with its directory if missing.
    pub path: PathBuf,
    pub durability: Durability,
    /// Reader connections for queries.
    pub readers: usize,
    /// A ready task gains one priority level per this much waiting, so low-priority work waits a
    /// bounded time under a flood of high-priority work; `None` turns aging off.
    pub aging: Option<std::time::Duration>,
    /// Keep the event log (on by default). Off, state changes append no events: the log, and
    /// the per-minute stats made from it, stay as they were.
    pub event_log: bool,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            durability: Durability::Full,
            readers: 4,
            aging: Some(DEFAULT_AGING),
            event_log: true,
        }
    }
}

pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Takes the lock file beside the database (`<db>-writer`) if no other process holds it.
fn writer_lock(db: &Path) -> Result<Option<std::fs::File>> {
    let mut path = db.as_os_str().to_owned();
    path.push("-writer");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("open {path:?}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!("lock {path:?}: {e}"))),
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY;",
    )?;
    // The same plan whatever the bound values. Without it SQLite re-planned every statement whose
    // WHERE it checks against a partial index's predicate each time a parameter was bound anew:
    // the fetch queries were parsed and planned again on every fetch (13% of the server's CPU
    // draining through 16-slot workers).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    topics: Arc<Topics>,
    /// The event pages committed last, which reads of the log's end are answered from.
    recent_events: Arc<Mutex<events::RecentPages>>,
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (or creates) the database and applies pending migrations.
    pub fn open(config: SqliteConfig) -> Result<SqliteStore> {
        if let Some(dir) = config.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        }
        let mut conn = open(&config.path).map_err(internal)?;
        schema::migrate(&mut conn).map_err(internal)?;
        // The embedded store belongs to one server process at a time: a lease (the leader lease)
        // held by an earlier process died with it, so the new one need not wait it out.
        conn.execute("DELETE FROM leases", []).map_err(internal)?;
        // The database's one writer holds this lock while its writer thread runs; only it may
        // leave events in rows (see `events::EventPage`). Another process opening the database
        // meanwhile (a CLI command beside a server) pages every event at once and recovers none.
        let writer_lock = writer_lock(&config.path)?;
        if writer_lock.is_some() {
            // Events an earlier process left in its tasks' rows, should it have died before they
            // were in pages, go into pages before anyone reads the log.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(internal)?;
            let recovered = events::recover(&tx).map_err(internal)?;
            tx.commit().map_err(internal)?;
            if recovered > 0 {
                tracing::info!(
                    events = recovered,
                    "wrote the events a stopped process left in its tasks' rows into the log"
                );
            }
        }
        let readers = (0..config.readers.max(1)).map(|_| open(&config.path)).collect::<rusqlite::Result<Vec<_>>>();
        // The log the writer syncs by hand. It exists once a connection has used the database
        // (the migration above did) and keeps its inode while any connection is open.
        let wal = match config.durability {
            Durability::Full => {
                let mut path = config.path.clone().into_os_string();
                path.push("-wal");
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&path);
                Some(file.map_err(|e| StoreError::Unavailable(format!("open the write-ahead log {path:?}: {e}")))?)
            }
            Durability::Relaxed => None,
        };
        // Checkpoints run on a thread of their own (see `checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES).map_err(internal)?;
        let checkpointer = Checkpointer::spawn(open(&config.path).map_err(internal)?);
        let topics = Arc::new(Topics::new());
        let writer = Writer::spawn(conn, wal, topics.clone(), config.aging, config.event_log, writer_lock);
        Ok(SqliteStore {
            recent_events: writer.recent_events(),
            writer,
            readers: Arc::new(Mutex::new(readers.map_err(internal)?)),
            path: config.path,
            topics,
            _checkpointer: checkpointer,
        })
    }

    /// Copies the database at `db` into the new file `out`, consistently, while a server may be
    /// using it (see `backup.rs`).
    pub fn backup(db: &Path, out: &Path) -> Result<BackupReport> {
        backup::backup(db, out)
    }

    /// Puts the backup `from` in place as the database at `db`, its leases expired; replaces an
    /// existing database only with `replace` (see `backup.rs`).
    pub fn restore(from: &Path, db: &Path, replace: bool) -> Result<BackupReport> {
        backup::restore(from, db, replace)
    }

    /// Reads the event log, each event made by `map` from its id and line: from the recent
    /// pages, on the caller's thread, when they hold the read (a hop to a reader thread for it
    /// raised the pickup p99 with a subscriber from 1.3 to 1.65 ms, six runs of each, `bench
    /// --only e2e,latency`); else from the table, on a reader thread.
    async fn read_log<T: Send + 'static>(
        &self,
        p: ReadEvents,
        map: fn(EventId, &str) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(found) = events::read_recent(&self.recent_events, &p, map) {
            return found;
        }
        let limit = p.limit;
        let (mut out, last) = self
            .read(move |c| {
                let mut last = p.after;
                let out = events::read_with(c, &p, |id, line| {
                    last = id;
                    map(id, line)
                })?;
                Ok((out, last))
            })
            .await?;
        self.go_on_in_ring(&mut out, last, limit, map)?;
        Ok(out)
    }

    /// Adds to `out`, a read from the table that ended at `last`, what the ring holds after it up
    /// to `limit` in all: the newest events may wait in their tasks' rows, in no page yet (see
    /// `events::EventPage`), and the ring has them.
    fn go_on_in_ring<T>(
        &self,
        out: &mut Vec<T>,
        last: EventId,
        limit: u32,
        map: fn(EventId, &str) -> rusqlite::Result<T>,
    ) -> Result<()> {
        if out.len() < limit as usize {
            let rest = ReadEvents { after: last, limit: limit - out.len() as u32 };
            if let Some(more) = events::read_recent(&self.recent_events, &rest, map) {
                out.extend(more?);
            }
        }
        Ok(())
    }

    /// Runs a query on a reader connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open(&path).map_err(internal)?,
            };
            let result = f(&conn);
            pool.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?
    }
}

/// Free space below which the store is not ready (`Store::ready`): room for the log to grow by a
/// few large commits.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// Most tasks a submit may carry and still run on its caller's thread when the writer is idle
/// (see `Writer::write_small`).
const SMALL: usize = 16;

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, p: SubmitTasks) -> Result<Vec<Submitted>> {
        if p.tasks.len() <= SMALL {
            self.writer.write_small(true, move |c, st| ops::submit(c, st, p)).await
        } else {
            self.writer.write(true, move |c, st| ops::submit(c, st, p)).await
        }
    }

    async fn get(&self, id: TaskId) -> Result<Task> {
        self.read(move |c| reads::get(c, id)).await
    }

    async fn list(&self, p: ListTasks) -> Result<TaskPage> {
        self.read(move |c| reads::list(c, &p)).await
    }

    async fn cancel(&self, p: CancelTask) -> Result<Cancelled> {
        self.writer.write(true, move |c, st| ops::cancel(c, st, p)).await
    }

    async fn retry(&self, p: RetryTask) -> Result<Task> {
        self.writer.write(true, move |c, st| ops::retry(c, st, p)).await
    }

    async fn fetch(&self, p: FetchTasks) -> Result<Vec<Task>> {
        let deadline = tokio::time::Instant::now() + p.wait;
        let started = tokio::time::Instant::now();
        let (mut ready, mut finished) = (self.subscribe(Topic::Ready), self.subscribe(Topic::Finished));
        let asked_at = p.now;
        let mut p = p;
        loop {
            ready.borrow_and_update();
            finished.borrow_and_update();
            let fetched = self.fetch_once(&p, deadline).await?;
            if !fetched.tasks.is_empty() || fetched.hold.is_none() || p.wait.is_zero() {
                return Ok(fetched.tasks);
            }
            // Limits held every candidate back: wait for them, not for new tasks.
            if !admission::wait_out(fetched.hold, &mut ready, &mut finished, deadline).await {
                return Ok(Vec::new());
            }
            p.now = asked_at.saturating_add(started.elapsed());
            p.wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        }
    }

    async fn heartbeat(&self, p: Heartbeat) -> Result<Vec<LeaseStatus>> {
        // Not inline: an inline heartbeat let a worker's fetch and the outcomes it carries land in
        // separate commits, so the worker briefly held more leases than slots (small_workers.rs).
        self.writer.write(false, move |c, st| ops::heartbeat(c, st, p)).await
    }

    async fn report(&self, p: ReportOutcomes) -> Result<Vec<Result<Task>>> {
        // Not small however few: finishing a workflow task can release or cancel its whole graph.
        self.writer.write(true, move |c, st| ops::report(c, st, p)).await
    }

    async fn expire_leases(&self, p: ExpireLeases) -> Result<usize> {
        self.writer.write(true, move |c, st| ops::expire_leases(c, st, p)).await
    }

    async fn expire_unstarted(&self, p: ExpireLeases) -> Result<usize> {
        self.writer.write(true, move |c, st| ops::expire_unstarted(c, st, p)).await
    }

    async fn promote_due(&self, p: PromoteDue) -> Result<Promoted> {
        self.writer.write(false, move |c, st| ops::promote_due(c, st, p)).await
    }

    async fn prune_expired(&self, p: PruneExpired) -> Result<usize> {
        self.writer.write(false, move |c, st| ops::prune_expired(c, st, p)).await
    }

    async fn prune_finished(&self, p: PruneFinished) -> Result<usize> {
        self.writer.write(false, move |c, st| ops::prune_finished(c, st, p)).await
    }

    async fn compact(&self) -> Result<()> {
        Ok(()) // SQLite reuses freed pages without being asked
    }

    async fn acquire_lease(&self, p: AcquireLease) -> Result<LeaseHolder> {
        self.writer.write(false, move |c, _| ops::acquire_lease(c, p)).await
    }

    async fn register_worker(&self, p: RegisterWorker) -> Result<WorkerInfo> {
        self.writer.write(true, move |c, st| ops::register_worker(c, st, p)).await
    }

    async fn update_queue(&self, p: UpdateQueue) -> Result<()> {
        self.writer.write(true, move |c, st| ops::update_queue(c, st, p)).await
    }

    async fn list_queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        self.read(move |c| reads::queues(c, now, true)).await
    }

    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        self.read(move |c| reads::queues(c, now, false)).await
    }

    async fn remove_queue(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.writer.write(true, move |c, _| ops::remove_queue(c, &name)).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        self.read(reads::workers).await
    }

    async fn remove_worker(&self, p: RemoveWorker) -> Result<()> {
        self.writer.write(true, move |c, _| ops::remove_worker(c, p)).await
    }

    async fn worker_owner(&self, worker_id: &str) -> Result<Option<String>> {
        let worker_id = worker_id.to_owned();
        self.read(move |c| access::worker_owner(c, &worker_id)).await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenRecord> {
        self.writer.write(true, move |c, _| access::create_token(c, token)).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(access::list_tokens).await
    }

    async fn revoke_token(&self, p: RevokeToken) -> Result<TokenRecord> {
        self.writer.write(true, move |c, _| access::revoke_token(c, p)).await
    }

    async fn touch_tokens(&self, p: TouchTokens) -> Result<()> {
        // Last-used times are a hint: losing the latest on a crash is fine, so no fsync.
        self.writer.write(false, move |c, _| access::touch_tokens(c, p)).await
    }

    async fn record_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        self.writer.write(true, move |c, _| access::record_audit(c, entries)).await
    }

    async fn list_audit(&self, p: ListAudit) -> Result<Vec<AuditEntry>> {
        self.read(move |c| access::list_audit(c, p)).await
    }

    async fn prune_audit(&self, before: Timestamp) -> Result<usize> {
        self.writer.write(false, move |c, _| access::prune_audit(c, before)).await
    }

    async fn read_events(&self, p: ReadEvents) -> Result<Vec<Event>> {
        self.read_log(p, events::parsed).await
    }

    async fn read_stored_events(&self, p: ReadEvents) -> Result<Vec<StoredEvent>> {
        self.read_log(p, events::stored).await
    }

    async fn read_event_measures(&self, p: ReadEvents) -> Result<Vec<taskwarden_core::stats::Measured>> {
        use taskwarden_core::stats::Measured;
        let (after, limit) = (p.after, p.limit);
        let mut out = self.read(move |c| events::read_measures(c, &p)).await?;
        let last = match out.last() {
            Some(Measured::Event(m)) => m.id,
            Some(Measured::Summed { last, .. }) => *last,
            None => after,
        };
        self.go_on_in_ring(&mut out, last, limit, events::measured)?;
        Ok(out)
    }

    async fn last_event_id(&self) -> Result<EventId> {
        // The ring's newest may be newer than any page (see `events::EventPage`).
        let paged = self.read(events::last_id).await?;
        Ok(events::last_recent(&self.recent_events)
            .filter(|&seq| seq > paged.seq)
            .map_or(paged, |seq| EventId { tx: 0, seq }))
    }

    async fn close(&self) -> Result<()> {
        self.writer.write(false, |c, st| st.events.close(c).map_err(internal)).await
    }

    async fn prune_events(&self, p: PruneEvents) -> Result<usize> {
        self.writer.write(false, move |c, st| events::prune(c, &mut st.events, p)).await
    }

    async fn stats_position(&self) -> Result<EventId> {
        self.read(stats::position).await
    }

    async fn add_stats(&self, p: AddStats) -> Result<()> {
        self.writer.write(true, move |c, _| stats::add(c, p)).await
    }

    async fn read_stats(&self, p: ReadStats) -> Result<Vec<taskwarden_core::stats::StatsRow>> {
        self.read(move |c| stats::read(c, &p)).await
    }

    async fn prune_stats(&self, before: Timestamp) -> Result<usize> {
        self.writer.write(false, move |c, _| stats::prune(c, before)).await
    }

    async fn create_webhook(&self, w: taskwarden_core::webhooks::Webhook) -> Result<()> {
        self.writer.write(true, move |c, _| webhooks::create(c, w)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<taskwarden_core::webhooks::Webhook>> {
        self.read(webhooks::list).await
    }

    async fn save_webhook(&self, w: taskwarden_core::webhooks::Webhook, if_position: Option<EventId>) -> Result<()> {
        self.writer.write(true, move |c, _| webhooks::save(c, w, if_position)).await
    }

    async fn delete_webhook(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.writer.write(true, move |c, _| webhooks::delete(c, &name)).await
    }

    async fn record_delivery(&self, d: taskwarden_core::webhooks::Delivery) -> Result<()> {
        self.writer.write(false, move |c, _| webhooks::record(c, d)).await
    }

    async fn list_deliveries(&self, p: ListDeliveries) -> Result<Vec<taskwarden_core::webhooks::Delivery>> {
        self.read(move |c| webhooks::deliveries(c, &p)).await
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<usize> {
        self.writer.write(false, move |c, _| webhooks::prune(c, before)).await
    }

    async fn task_logs(&self, p: ReadTaskLogs) -> Result<Vec<taskwarden_core::task_logs::TaskLogLine>> {
        self.read(move |c| task_logs::read(c, &p)).await
    }

    async fn ready_needs(&self) -> Result<Vec<ReadyNeeds>> {
        self.read(scheduling::ready_needs).await
    }

    async fn ready_kinds(&self) -> Result<Vec<ReadyKind>> {
        self.read(scheduling::ready_kinds).await
    }

    async fn kind_schemas(&self) -> Result<Vec<KindSchema>> {
        self.read(scheduling::kind_schemas).await
    }

    async fn create_cron(&self, p: CreateCron) -> Result<CronInfo> {
        self.writer.write(true, move |c, _| scheduling::create_cron(c, p)).await
    }

    async fn list_crons(&self) -> Result<Vec<CronInfo>> {
        self.read(scheduling::list_crons).await
    }

    async fn pause_cron(&self, p: PauseCron) -> Result<CronInfo> {
        self.writer.write(true, move |c, _| scheduling::pause_cron(c, p)).await
    }

    async fn update_cron(&self, p: UpdateCron) -> Result<CronInfo> {
        self.writer.write(true, move |c, _| scheduling::update_cron(c, p)).await
    }

    async fn delete_cron(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.writer.write(true, move |c, _| scheduling::delete_cron(c, &name)).await
    }

    async fn fire_cron(&self, p: FireCron) -> Result<bool> {
        self.writer.write(true, move |c, st| scheduling::fire_cron(c, st, p)).await
    }

    async fn submit_workflow(&self, p: SubmitWorkflow) -> Result<Workflow> {
        self.writer.write(true, move |c, st| workflows::submit(c, st, p)).await
    }

    async fn get_workflow(&self, id: TaskId) -> Result<Workflow> {
        self.read(move |c| workflows::get(c, id)).await
    }

    async fn list_workflows(&self, p: ListWorkflows) -> Result<WorkflowPage> {
        self.read(move |c| workflows::list(c, &p)).await
    }

    async fn workflow_state(&self, id: TaskId) -> Result<WorkflowState> {
        self.read(move |c| workflows::state(c, id)).await
    }

    async fn cancel_workflow(&self, p: CancelWorkflow) -> Result<Workflow> {
        self.writer.write(true, move |c, st| workflows::cancel(c, st, p)).await
    }

    async fn retry_workflow(&self, p: RetryWorkflow) -> Result<Workflow> {
        self.writer.write(true, move |c, st| workflow_retry::retry(c, st, p)).await
    }

    async fn fan_out(&self, p: FanOutTasks) -> Result<FanOut> {
        self.writer.write(true, move |c, st| workflows::fan_out(c, st, p)).await
    }

    async fn parents(&self, p: ListParents) -> Result<Vec<ParentResult>> {
        self.read(move |c| workflows::parents(c, &p)).await
    }

    fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.topics.subscribe(topic)
    }

    /// Ready when a reader and the writer thread both answer.
    async fn ready(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(internal)).await?;
        // SQLite reuses its log's space once checkpointed, so a small commit can still succeed on a
        // full disk while a larger one would not: below a floor of free space, not ready.
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(fs) = rustix::fs::statvfs(dir) {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free < MIN_FREE_BYTES {
                return Err(StoreError::Unavailable(format!(
                    "{free} bytes free on the disk of {}, under the {MIN_FREE_BYTES} the store keeps in hand",
                    dir.display()
                )));
            }
        }
        // A real, durable commit: a store that cannot write (a full disk, a file gone read-only)
        // is not ready, whatever it can still read.
        self.writer
            .write(true, |c, _| {
                c.prepare_cached(
                    "INSERT INTO ready_probe (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
                )
                .and_then(|mut s| s.execute([]))
                .map(drop)
                .map_err(|e| StoreError::Unavailable(format!("the database cannot commit: {e}")))
            })
            .await
    }
}

impl SqliteStore {
    /// One trip through the writer: leases what passes, parks if nothing is ready (and nothing
    /// was held back by a limit), and answers by `deadline` at the latest.
    async fn fetch_once(&self, p: &FetchTasks, deadline: tokio::time::Instant) -> Result<admission::Fetched> {
        let wait = p.wait;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let params =
            FetchTasks { worker_id: p.worker_id.clone(), queues: p.queues.clone(), finished: p.finished.clone(), ..*p };
        let op = handoff::FetchOp { params, park: !wait.is_zero(), reply };
        self.writer.submit_job(writer::WriteJob { durable: false, op: Box::new(op) }).await?;
        let mut guard = AnswerGuard { answer: Some(answer), writer: self.writer.clone() };
        let answer = guard.answer.as_mut().expect("just set");
        let answered = if wait.is_zero() {
            answer.await
        } else {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(answered) => answered,
                // Out of time: stop listening, but keep whatever was leased to us meanwhile.
                Err(_) => return Ok(admission::Fetched { tasks: guard.stop_listening(), ..Default::default() }),
            }
        };
        guard.answer = None; // received: from here on the tasks are the caller's
        answered.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

/// The receiving end of a fetch. If the fetch is abandoned (a timeout, a shutdown, a client that
/// hung up) after the writer leased it tasks, the guard gives them straight back.
struct AnswerGuard {
    answer: Option<tokio::sync::oneshot::Receiver<Result<admission::Fetched>>>,
    writer: Writer,
}

impl AnswerGuard {
    /// Stops listening; returns tasks that were leased to this fetch before it stopped.
    fn stop_listening(&mut self) -> Vec<Task> {
        let Some(mut answer) = self.answer.take() else { return Vec::new() };
        answer.close();
        match answer.try_recv() {
            Ok(Ok(fetched)) => fetched.tasks,
            _ => Vec::new(),
        }
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        let late = self.stop_listening();
        if let Some(now) = late.iter().filter_map(|t| t.lease.as_ref().map(|l| l.started_at)).max() {
            // If the queue is full the leases simply expire and the tasks run later.
            self.writer.try_submit_job(handoff::release_job(late, now));
        }
    }
}
