//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and a durable commit costs an fsync. So every change goes
//! to one thread over a channel; the thread takes whatever has queued up, runs it all in one
//! transaction and commits once (see `run_group` for how a failing operation is kept from
//! committing half its work). Many concurrent submits thus share a single fsync, and nobody is
//! answered before the commit that holds their change has returned.
//!
//! A small operation that finds the writer idle runs on its caller's thread instead
//! ([`Writer::write_small`]): handing it to the writer thread and its answer back costs two
//! thread wake-ups, which on a virtual machine take longer than the write itself. The
//! connection sits behind a mutex, so either way one write runs at a time, in one group commit.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rusqlite::Connection;
use taskwarden_core::{IdGenerator, Task, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::handoff::{self, FetchReply, Waiter};
use super::ledger::Ledger;
use super::scheduling::BucketCache;
use crate::params::Topic;
use crate::topics::{Topics, topic_index};
use crate::{Result, StoreError};

/// Most operations one transaction takes. Bounds the latency a large group adds to its first
/// member, and the work lost to a failed commit.
const MAX_GROUP: usize = 512;

/// Most parked fetches a small write may serve on its caller's thread: handing new tasks to each
/// is a query, and many would stall that async thread.
const MAX_INLINE_WAITERS: usize = 4;

/// State owned by the writer thread and lent to each operation.
pub(crate) struct WriterState {
    pub ids: IdGenerator,
    pub rng: StdRng,
    /// Topics the current operation touched; announced only after its commit.
    pub touched: [bool; 3],
    /// The latest "now" any operation brought: the time the writer leases tasks to waiters at.
    pub now: Timestamp,
    /// Fetchers parked until tasks become ready, oldest first.
    pub waiters: VecDeque<Waiter>,
    /// Fetchers given tasks in the current transaction, answered once it commits.
    pub served: Vec<(FetchReply, crate::admission::Fetched)>,
    /// How many parked fetchers have been answered after a commit, ever.
    pub handed_off: u64,
    /// Tasks leased per queue, for the weighted fair share of fetches from several queues.
    pub leased: std::collections::BTreeMap<String, u64>,
    /// A ready task gains a priority level per this much waiting (see `SqliteConfig::aging`).
    pub aging: Option<std::time::Duration>,
    /// What the running tasks hold, as the database has them once the open transaction commits.
    pub ledger: Ledger,
    /// Rate limits' token buckets as stored.
    pub buckets: BucketCache,
    /// The events the open transaction appended, written as a page before it commits.
    pub events: super::events::EventPage,
}

impl WriterState {
    pub fn touch(&mut self, topic: Topic) {
        self.touched[topic_index(topic)] = true;
    }

    /// Takes note of an operation's time; the writer's notion of now never goes backwards.
    pub fn observe(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }
}

pub(crate) type Reply = Box<dyn FnOnce(Result<()>) + Send>;

/// One caller's operation, type-erased so that one channel carries them all.
pub(crate) trait Operation: Send {
    /// Runs the operation; returns whether it failed and how
    /// to answer its caller once the commit's outcome is known.
    fn run(self: Box<Self>, conn: &Connection, state: &mut WriterState) -> (bool, Reply);
    /// Answers the caller without running the operation.
    fn abort(self: Box<Self>, error: StoreError);
}

struct Pending<F, T> {
    op: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Operation for Pending<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, state: &mut WriterState) -> (bool, Reply) {
        let Pending { op, reply } = *self;
        let result = op(conn, state);
        let failed = result.is_err();
        (failed, Box::new(move |commit| drop(reply.send(commit.and(result)))))
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

pub(crate) struct WriteJob {
    /// Whether the caller is owed a durable commit (submits, completions) or can accept one that
    /// only survives a process crash (leases, heartbeats: losing one re-runs a task, which
    /// at-least-once execution allows).
    pub durable: bool,
    pub op: Box<dyn Operation>,
}

/// What one write needs: the connection, the log to sync, the state lent to operations.
struct Core {
    conn: Connection,
    /// The database's write-ahead log, synced by hand (see `commit_group`); `None` with relaxed
    /// durability.
    wal: Option<File>,
    state: WriterState,
}

impl Core {
    /// Commits `group`, then gives tasks leased to fetchers that gave up in the meantime straight
    /// back to the queue (and to any other waiting fetcher), instead of waiting out their lease.
    fn commit(&mut self, topics: &Topics, group: Vec<WriteJob>) {
        let Core { conn, wal, state } = self;
        let mut orphans = commit_group(conn, wal.as_ref(), state, topics, group);
        while !orphans.is_empty() {
            let release = handoff::release_job(std::mem::take(&mut orphans), state.now);
            orphans = commit_group(conn, wal.as_ref(), state, topics, vec![release]);
        }
    }
}

/// The way to the single writer: its queue, and the connection itself for a small write that
/// finds the writer idle.
#[derive(Clone)]
pub(crate) struct Writer {
    // Bounded so that a flood of submits queues in the HTTP layer (and pushes back on clients)
    // rather than growing this queue without limit.
    tx: mpsc::Sender<WriteJob>,
    core: Arc<Mutex<Core>>,
    topics: Arc<Topics>,
    /// Set while the writer thread waits for the lock with jobs in hand: small writes then queue
    /// behind it instead of taking the lock first (the mutex is not fair).
    writer_waiting: Arc<AtomicBool>,
    /// The event pages committed last (see `events::RecentPages`).
    recent_events: Arc<Mutex<super::events::RecentPages>>,
}

impl Writer {
    /// Starts the writer thread. `wal` is the database's write-ahead log, synced by hand (see
    /// `commit_group`); `None` with relaxed durability.
    pub fn spawn(
        conn: Connection,
        wal: Option<File>,
        topics: std::sync::Arc<Topics>,
        aging: Option<std::time::Duration>,
        event_log: bool,
        lock: Option<File>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(8192);
        let state = WriterState {
            ids: IdGenerator::new(),
            rng: StdRng::from_os_rng(),
            touched: [false; 3],
            now: Timestamp::EPOCH,
            waiters: VecDeque::new(),
            served: Vec::new(),
            handed_off: 0,
            leased: Default::default(),
            aging,
            ledger: Ledger::default(),
            buckets: BucketCache::default(),
            events: super::events::EventPage::new(event_log, lock.is_some()),
        };
        let recent_events = state.events.recent();
        let mut core = Core { conn, wal, state };
        reload_ledger(&core.conn, &mut core.state);
        // SQLite itself never syncs on commit; the writer syncs the log when a caller is owed it.
        if let Err(e) = core.conn.execute_batch("PRAGMA synchronous = NORMAL") {
            tracing::error!(error = %e, "cannot set synchronous = NORMAL");
        }
        let core = Arc::new(Mutex::new(core));
        let writer_waiting = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            tx,
            core: core.clone(),
            topics: topics.clone(),
            writer_waiting: writer_waiting.clone(),
            recent_events,
        };
        std::thread::Builder::new()
            .name("taskwarden-sqlite-writer".into())
            .spawn(move || {
                run(&core, rx, &topics, &writer_waiting);
                drop(lock); // held until the last page is written
            })
            .expect("spawn the SQLite writer thread");
        writer
    }

    /// The event pages committed last, for readers.
    pub fn recent_events(&self) -> Arc<Mutex<super::events::RecentPages>> {
        self.recent_events.clone()
    }

    /// Runs `op` inside the next group transaction and resolves once that transaction committed.
    pub async fn write<T, F>(&self, durable: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteJob { durable, op: Box::new(Pending { op, reply }) })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    /// As [`Writer::write`], for an operation that takes no more than a few rows: when nothing
    /// is queued and no write is running, it runs (and commits) on the caller's thread. Not when
    /// it is owed a sync of the log: an fsync would block the caller's thread for milliseconds.
    pub async fn write_small<T, F>(&self, durable: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
    {
        match self.try_inline(durable, op) {
            Ok((answer, served_fetchers)) => {
                if served_fetchers {
                    // Tasks went to parked fetches, woken onto this thread's run queue, where
                    // they would wait for this caller's response to be written: let them answer
                    // first.
                    tokio::task::yield_now().await;
                }
                answer
            }
            Err(op) => self.write(durable, op).await,
        }
    }

    /// Runs `op` here if the writer is idle: its answer, and whether the commit handed tasks to
    /// parked fetches. Gives `op` back otherwise.
    fn try_inline<T, F>(&self, durable: bool, op: F) -> std::result::Result<(Result<T>, bool), F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
    {
        if self.tx.capacity() != self.tx.max_capacity() || self.writer_waiting.load(Ordering::Acquire) {
            return Err(op);
        }
        let Ok(mut core) = self.core.try_lock() else { return Err(op) };
        if (durable && core.wal.is_some()) || core.state.waiters.len() > MAX_INLINE_WAITERS {
            return Err(op);
        }
        let (reply, mut rx) = oneshot::channel();
        let handed_off = core.state.handed_off;
        core.commit(&self.topics, vec![WriteJob { durable, op: Box::new(Pending { op, reply }) }]);
        let served_fetchers = core.state.handed_off != handed_off;
        drop(core);
        let answer =
            rx.try_recv().unwrap_or_else(|_| Err(StoreError::Unavailable("the SQLite writer has stopped".into())));
        Ok((answer, served_fetchers))
    }

    /// Queues a job whose operation answers its caller itself.
    pub async fn submit_job(&self, job: WriteJob) -> Result<()> {
        self.tx.send(job).await.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))
    }

    /// Queues a job without waiting for room (from a destructor); drops it if the queue is full.
    pub fn try_submit_job(&self, job: WriteJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

fn run(core: &Mutex<Core>, mut rx: mpsc::Receiver<WriteJob>, topics: &Topics, waiting: &AtomicBool) {
    while let Some(first) = rx.blocking_recv() {
        waiting.store(true, Ordering::Release);
        let locked = core.lock();
        waiting.store(false, Ordering::Release);
        // A panic while holding the lock (a ledger that cannot be loaded) stops the writer.
        let Ok(mut core) = locked else {
            first.op.abort(StoreError::Unavailable("the SQLite writer has stopped".into()));
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        core.commit(topics, group);
    }
    // Every handle is gone: the store is closing. Events deferred in their tasks' rows go into a
    // page now, so that the next open need not look for them.
    if let Ok(mut core) = core.lock() {
        let (reply, mut answer) = oneshot::channel();
        let op = |conn: &Connection, state: &mut WriterState| state.events.close(conn).map_err(super::internal);
        core.commit(topics, vec![WriteJob { durable: false, op: Box::new(Pending { op, reply }) }]);
        if let Ok(Err(e)) = answer.try_recv() {
            tracing::warn!(error = %e, "could not page the deferred events at shutdown; the next open will");
        }
    }
}

/// Runs one group in one transaction, hands newly ready tasks to waiting fetchers, commits, and
/// answers everyone. Returns tasks leased to fetchers that are no longer listening.
///
/// The commit writes the log without syncing it. Then, in this order:
/// 1. fetchers handed tasks are answered: a worker may start a task whose submit is not yet
///    durable, which at-least-once execution allows (should the server die before the sync, the
///    submitter was never acknowledged and the worker's report will find no task); this takes the
///    fsync out of the pickup latency;
/// 2. if any operation in the group is owed durability (a submit, a completion, ...), the log is
///    fsynced: one sync for the whole group, and since the log is sequential it also makes every
///    earlier unsynced commit durable;
/// 3. everyone else is answered, and waiters for finished tasks are woken.
fn commit_group(
    conn: &Connection,
    wal: Option<&File>,
    state: &mut WriterState,
    topics: &Topics,
    group: Vec<WriteJob>,
) -> Vec<Task> {
    if !conn.is_autocommit() {
        // A transaction left open by a failed ROLLBACK would make every BEGIN fail.
        let _ = exec(conn, "ROLLBACK");
    }
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let msg = e.to_string();
        for job in group {
            job.op.abort(StoreError::Unavailable(msg.clone()));
        }
        return Vec::new();
    }
    let owed_sync = group.iter().any(|j| j.durable);
    let changes_before = conn.total_changes();
    let (replies, mut partial) = run_group(conn, state, group);
    if partial.is_none() && state.touched[topic_index(Topic::Ready)] && !state.waiters.is_empty() {
        partial = handoff::serve_waiters(conn, state).err();
    }
    if partial.is_none() {
        let now = state.now;
        partial = state.events.before_commit(conn, now).err().map(super::internal);
    }
    let mut commit = match partial {
        // An operation failed after writing: nothing of this group may be committed.
        Some(e) => Err(e),
        None if conn.is_autocommit() => Err(StoreError::Unavailable("the transaction was rolled back; retry".into())),
        None => exec(conn, "COMMIT"),
    };
    if commit.is_ok() {
        state.events.committed();
    }
    if commit.is_err() {
        let _ = exec(conn, "ROLLBACK");
        state.touched = [false; 3];
        state.events.clear();
        reload_ledger(conn, state); // it saw writes that did not happen after all
        state.buckets.clear();
    }
    let touched = std::mem::take(&mut state.touched);
    let orphans = handoff::answer_served(state, &commit);
    if commit.is_ok() {
        topics.announce([touched[0], touched[1], false]);
        // A group that changed nothing (an idle lease-expiry pass) wrote no log: nothing to sync.
        if owed_sync
            && conn.total_changes() != changes_before
            && let Some(wal) = wal
        {
            commit = wal.sync_data().map_err(|e| StoreError::Unavailable(format!("syncing the log: {e}")));
        }
    }
    // Announce before answering, so a caller that hears back has already moved the counters.
    if commit.is_ok() {
        topics.announce([false, false, touched[2]]);
    }
    for reply in replies {
        reply(match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
    orphans
}

/// Loads the ledger from the database. Should that fail, the writer stops: a wrong ledger would
/// let fetches over-commit workers and break concurrency limits.
fn reload_ledger(conn: &Connection, state: &mut WriterState) {
    match Ledger::load(conn) {
        Ok(ledger) => state.ledger = ledger,
        Err(e) => panic!("cannot load the running tasks into the writer's ledger: {e}"),
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(super::internal)
}

/// Runs each operation of the group in the open transaction.
///
/// No savepoint per operation: savepoints make SQLite copy every page an operation first touches,
/// which cost more than the rest of the write path. Instead, operations refuse before they write
/// (a missing task, a stale lease, a bad transition), so a refused operation has changed nothing;
/// should one fail after writing (an I/O error), the whole group is rolled back and every caller
/// told to retry. Returns that error, if any.
fn run_group(conn: &Connection, state: &mut WriterState, group: Vec<WriteJob>) -> (Vec<Reply>, Option<StoreError>) {
    let mut replies = Vec::with_capacity(group.len());
    let mut partial = None;
    for job in group {
        if partial.is_some() {
            job.op.abort(StoreError::Unavailable("an earlier write in the same commit failed".into()));
            continue;
        }
        let before = (state.touched, conn.total_changes(), state.events.mark());
        // A panicking operation must not take the writer thread (and so the whole store) down:
        // its caller sees its reply dropped, and the group is rolled back.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.op.run(conn, state)));
        let Ok((failed, reply)) = ran else {
            tracing::error!("a store operation panicked; rolling back its group");
            partial = Some(StoreError::Internal("a store operation panicked".into()));
            continue;
        };
        if failed {
            // SQLite rolls a transaction back by itself on some errors (I/O, full disk); what
            // follows would then run outside any transaction.
            if conn.total_changes() != before.1 || conn.is_autocommit() {
                partial = Some(StoreError::Unavailable("a write failed part-way; retry".into()));
            }
            state.touched = before.0;
            state.events.back_to(before.2);
        }
        replies.push(reply);
    }
    (replies, partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &tempfile::TempDir, durable_log: bool) -> Writer {
        let path = dir.path().join(if durable_log { "full.db" } else { "relaxed.db" });
        let mut conn = super::super::open(&path).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let wal = durable_log.then(|| {
            let mut wal = path.into_os_string();
            wal.push("-wal");
            File::options().read(true).write(true).open(wal).unwrap()
        });
        Writer::spawn(conn, wal, Arc::new(Topics::new()), None, true, None)
    }

    fn thread_name(_: &Connection, _: &mut WriterState) -> Result<Option<String>> {
        Ok(std::thread::current().name().map(String::from))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_small_write_finding_the_writer_idle_runs_on_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let here = std::thread::current().name().map(String::from);
        let relaxed = writer(&dir, false);
        assert_eq!(relaxed.write_small(true, thread_name).await.unwrap(), here);
        assert_eq!(relaxed.write(true, thread_name).await.unwrap().as_deref(), Some("taskwarden-sqlite-writer"));
        // Owed a sync of the log: never on the caller's thread, where an fsync would block it.
        let full = writer(&dir, true);
        assert_eq!(full.write_small(true, thread_name).await.unwrap().as_deref(), Some("taskwarden-sqlite-writer"));
        // The writer thread answers before it lets go of the connection: wait until it has.
        while full.core.try_lock().is_err() {
            std::thread::yield_now();
        }
        assert_eq!(full.write_small(false, thread_name).await.unwrap(), here);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_small_write_queues_behind_a_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir, false);
        let (started, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let long = tokio::spawn({
            let w = w.clone();
            async move {
                w.write(false, move |_, _| {
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        running.recv().unwrap();
        // The writer thread holds the connection: this write waits its turn on that thread.
        let small = tokio::spawn({
            let w = w.clone();
            async move { w.write_small(false, thread_name).await }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        long.await.unwrap().unwrap();
        assert_eq!(small.await.unwrap().unwrap().as_deref(), Some("taskwarden-sqlite-writer"));
    }
}
