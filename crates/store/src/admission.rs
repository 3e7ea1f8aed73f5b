//! What both backends share when a fetch passes through the limits gate: taking candidates in
//! placement order, and waiting out a hold (a limit that held every candidate back) without
//! either parking forever or spinning.

use std::time::Duration;

use taskwarden_core::limits::Gate;
use taskwarden_core::{Task, Timestamp};
use tokio::sync::watch;

/// Why a fetch that leased nothing may lease something soon without any new task arriving.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hold {
    /// A rate limit gets a token this soon.
    pub retry_in: Option<Duration>,
    /// A concurrency limit frees up when a running task ends.
    pub concurrency: bool,
}

impl Hold {
    pub fn of(gate: &Gate) -> Hold {
        Hold { retry_in: gate.retry_in, concurrency: gate.held_for_concurrency }
    }

    pub fn is_none(&self) -> bool {
        *self == Hold::default()
    }
}

/// A fetch's answer inside a backend.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub tasks: Vec<Task>,
    pub hold: Hold,
}

/// How many more candidates a fetch looks at when the first `limit` did not fill it and some were
/// passed over for reasons the tasks behind them may not share ([`Gate::passed_over`]).
pub(crate) const WIDER_WINDOW: usize = 256;

/// Takes candidates (in placement order) that pass the gate, up to `limit`.
pub(crate) fn admit(gate: &mut Gate, order: Vec<Task>, limit: usize, now: Timestamp) -> Vec<Task> {
    let mut taken = Vec::with_capacity(limit);
    for t in order {
        if taken.len() == limit {
            break;
        }
        if gate.admit(&t, now).is_ok() {
            taken.push(t);
        }
    }
    taken
}

/// Whether a fetch that took `taken` of `limit` from a window of `window` candidates per queue
/// (`full`: some queue had that many) should look `WIDER_WINDOW` further down.
pub(crate) fn widen(gate: &Gate, taken: usize, limit: usize, window: usize, full: bool) -> bool {
    taken < limit && gate.passed_over && full && window == limit
}

/// After a fetch came back empty because limits held its candidates: waits until something may
/// have changed (a task became ready or finished, or a token is due), at most until `deadline`.
/// Returns false when the deadline passed.
pub(crate) async fn wait_out(
    hold: Hold,
    ready: &mut watch::Receiver<u64>,
    finished: &mut watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> bool {
    // A token comes by itself; a concurrency slot frees when a task finishes. Re-check at least
    // every second either way, for limits another node changed.
    let tick = hold.retry_in.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
    let wake = (tokio::time::Instant::now() + tick).min(deadline);
    tokio::select! {
        _ = ready.changed() => {}
        _ = finished.changed(), if hold.concurrency => {}
        _ = tokio::time::sleep_until(wake) => {}
    }
    tokio::time::Instant::now() < deadline
}
