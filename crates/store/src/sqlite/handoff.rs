//! Direct hand-off to waiting fetchers.
//!
//! A fetch that finds nothing parks on the writer thread. When a later operation makes tasks
//! ready (a submit, a promotion, a retry), the writer leases them to the parked fetchers inside
//! that same transaction and answers them the moment it commits: no polling, no second trip
//! through the writer, and no herd of fetchers racing for one task.

use taskwarden_core::protocol::Report;
use taskwarden_core::{Task, Timestamp};
use tokio::sync::oneshot;

use super::ops;
use super::writer::{Operation, Reply, WriteJob, WriterState};
use crate::admission::Fetched;
use crate::params::{FetchTasks, ReportOutcomes};
use crate::{Result, StoreError};

pub(crate) type FetchReply = oneshot::Sender<Result<Fetched>>;

/// A parked fetch.
pub(crate) struct Waiter {
    params: FetchTasks,
    reply: FetchReply,
}

/// A fetch, answered by the writer itself: at once, or when tasks arrive if `park` is set.
pub(crate) struct FetchOp {
    pub params: FetchTasks,
    pub park: bool,
    pub reply: FetchReply,
}

fn answered_later() -> Reply {
    Box::new(|_| {})
}

impl Operation for FetchOp {
    fn run(self: Box<Self>, conn: &rusqlite::Connection, state: &mut WriterState) -> (bool, Reply) {
        let FetchOp { params, park, reply } = *self;
        state.observe(params.now);
        if reply.is_closed() {
            return (false, answered_later()); // the caller gave up while queued: lease nothing
        }
        match ops::fetch(conn, state, &params) {
            // Held back by a limit, the caller waits for the limit itself (see `admission`).
            Ok(f) if f.tasks.is_empty() && f.hold.is_none() && park => {
                // Parking is the one moment the list grows, so prune callers that gave up here.
                state.waiters.retain(|w| !w.reply.is_closed());
                state.waiters.push_back(Waiter { params, reply });
                (false, answered_later())
            }
            Ok(f) => {
                state.served.push((reply, f));
                (false, answered_later())
            }
            Err(e) => (true, Box::new(move |_| drop(reply.send(Err(e))))),
        }
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Leases ready tasks to parked fetchers, oldest first, inside the open transaction. A fetch that
/// fails is answered with its error; only a failure that wrote something fails the transaction.
pub(crate) fn serve_waiters(conn: &rusqlite::Connection, state: &mut WriterState) -> Result<()> {
    let mut waiting = std::mem::take(&mut state.waiters);
    waiting.retain(|w| !w.reply.is_closed());
    if waiting.len() > 1 {
        // The least-loaded worker first (by its share of slots or resources in use); among
        // equals, the one that waited longest.
        let workers: Vec<&str> = waiting.iter().map(|w| w.params.worker_id.as_str()).collect();
        if let Ok(loads) = super::scheduling::loads(conn, &state.ledger, &workers) {
            let mut ranked: Vec<(f64, Waiter)> = loads.into_iter().zip(waiting.drain(..)).collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
            waiting.extend(ranked.into_iter().map(|(_, w)| w));
        }
    }
    while let Some(mut w) = waiting.pop_front() {
        if w.reply.is_closed() {
            continue; // the fetch timed out or its caller went away
        }
        w.params.now = state.now;
        let before = conn.total_changes();
        match ops::fetch(conn, state, &w.params) {
            Ok(f) if f.tasks.is_empty() && f.hold.is_none() => state.waiters.push_back(w),
            Ok(f) => state.served.push((w.reply, f)),
            Err(e) => {
                let wrote = conn.total_changes() != before || conn.is_autocommit();
                let _ = w.reply.send(Err(e));
                if wrote {
                    state.waiters.extend(waiting);
                    return Err(StoreError::Unavailable("a hand-off failed part-way; retry".into()));
                }
            }
        }
    }
    Ok(())
}

/// Answers the fetchers served in the transaction that just ended. Returns the tasks whose
/// fetcher stopped listening before the answer arrived: they are leased to no one.
pub(crate) fn answer_served(state: &mut WriterState, commit: &Result<()>) -> Vec<Task> {
    let mut orphans = Vec::new();
    for (reply, fetched) in state.served.drain(..) {
        match commit {
            Ok(()) => match reply.send(Ok(fetched)) {
                Ok(()) => state.handed_off += 1,
                // Only what was just sent can come back: an Ok.
                Err(unheard) => orphans.extend(unheard.map(|f| f.tasks).unwrap_or_default()),
            },
            Err(e) => drop(reply.send(Err(StoreError::Unavailable(e.to_string())))),
        }
    }
    orphans
}

/// A job that gives orphaned leases back, as if their worker had released them.
pub(crate) fn release_job(orphans: Vec<Task>, now: Timestamp) -> WriteJob {
    let reports = orphans.iter().filter_map(Report::release).collect();
    WriteJob { durable: false, op: Box::new(ReleaseOp(ReportOutcomes { worker_id: None, reports, now })) }
}

/// Nobody waits on this one: if it fails, the leases simply expire and the tasks run later.
struct ReleaseOp(ReportOutcomes);

impl Operation for ReleaseOp {
    fn run(self: Box<Self>, conn: &rusqlite::Connection, state: &mut WriterState) -> (bool, Reply) {
        let failed = ops::report(conn, state, self.0).is_err();
        (failed, answered_later())
    }

    fn abort(self: Box<Self>, _error: StoreError) {}
}
