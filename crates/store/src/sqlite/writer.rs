//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and a durable commit costs an fsync. So every change goes
//! to one thread over a channel; the thread takes whatever has queued up, runs it all in one
//! transaction and commits once (see `run_group` for how a failing operation is kept from
//! committing half its work). Many concurrent submits thus share a single fsync, and nobody is
//! answered before the commit that holds their change has returned.

use std::collections::VecDeque;
use std::fs::File;

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
    /// Tasks leased per queue, for the weighted fair share of fetches from several queues.
    pub leased: std::collections::BTreeMap<String, u64>,
    /// A ready task gains a priority level per this much waiting (see `SqliteConfig::aging`).
    pub aging: Option<std::time::Duration>,
    /// What the running tasks hold, as the database has them once the open transaction commits.
    pub ledger: Ledger,
    /// Rate limits' token buckets as stored.
    pub buckets: BucketCache,
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

/// Wake-up counters, one per [`Topic`].
#[derive(Clone)]
pub(crate) struct Writer {
    // Bounded so that a flood of submits queues in the HTTP layer (and pushes back on clients)
    // rather than growing this queue without limit.
    tx: mpsc::Sender<WriteJob>,
}

impl Writer {
    /// Starts the writer thread. `wal` is the database's write-ahead log, synced by hand (see
    /// `commit_group`); `None` with relaxed durability.
    pub fn spawn(
        conn: Connection,
        wal: Option<File>,
        topics: std::sync::Arc<Topics>,
        aging: Option<std::time::Duration>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(8192);
        std::thread::Builder::new()
            .name("taskwarden-sqlite-writer".into())
            .spawn(move || run(conn, wal, rx, &topics, aging))
            .expect("spawn the SQLite writer thread");
        Writer { tx }
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

    /// Queues a job whose operation answers its caller itself.
    pub async fn submit_job(&self, job: WriteJob) -> Result<()> {
        self.tx.send(job).await.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))
    }

    /// Queues a job without waiting for room (from a destructor); drops it if the queue is full.
    pub fn try_submit_job(&self, job: WriteJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

fn run(
    conn: Connection,
    wal: Option<File>,
    mut rx: mpsc::Receiver<WriteJob>,
    topics: &Topics,
    aging: Option<std::time::Duration>,
) {
    let mut state = WriterState {
        ids: IdGenerator::new(),
        rng: StdRng::from_os_rng(),
        touched: [false; 3],
        now: Timestamp::EPOCH,
        waiters: VecDeque::new(),
        served: Vec::new(),
        leased: Default::default(),
        aging,
        ledger: Ledger::default(),
        buckets: BucketCache::default(),
    };
    reload_ledger(&conn, &mut state);
    // SQLite itself never syncs on commit; the writer syncs the log when a caller is owed it.
    if let Err(e) = conn.execute_batch("PRAGMA synchronous = NORMAL") {
        tracing::error!(error = %e, "cannot set synchronous = NORMAL");
    }
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut orphans = commit_group(&conn, wal.as_ref(), &mut state, topics, group);
        // Tasks leased to fetchers that gave up in the meantime go straight back to the queue
        // (and to any other waiting fetcher), instead of waiting out their lease.
        while !orphans.is_empty() {
            let release = handoff::release_job(std::mem::take(&mut orphans), state.now);
            orphans = commit_group(&conn, wal.as_ref(), &mut state, topics, vec![release]);
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
    let mut commit = match partial {
        // An operation failed after writing: nothing of this group may be committed.
        Some(e) => Err(e),
        None if conn.is_autocommit() => Err(StoreError::Unavailable("the transaction was rolled back; retry".into())),
        None => exec(conn, "COMMIT"),
    };
    if commit.is_err() {
        let _ = exec(conn, "ROLLBACK");
        state.touched = [false; 3];
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
        let before = (state.touched, conn.total_changes());
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
        }
        replies.push(reply);
    }
    (replies, partial)
}
