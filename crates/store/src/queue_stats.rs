//! Queue statistics, assembled the same way for every backend from a few grouped counts.

use std::collections::BTreeMap;

use taskwarden_core::Timestamp;
use taskwarden_core::protocol::QueueInfo;

use crate::params::QueueSettings;

/// The states counted per queue; each backend runs one grouped count per entry, with the state
/// as a literal so the state's partial index serves it.
pub(crate) const COUNTED: [&str; 4] = ["ready", "scheduled", "running", "failed"];

/// One row of a grouped count: the queue, which of [`COUNTED`] (or `"succeeded"` for the last
/// minute), how many, and for ready tasks the earliest `run_at`.
pub(crate) struct Count {
    pub queue: String,
    pub what: &'static str,
    pub n: u64,
    pub earliest: Option<Timestamp>,
}

/// How long a queue stays listed after its last task finished, though it holds nothing now.
pub const LISTED_AFTER_ACTIVITY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The start of the last minute (successes per minute) and of the window a queue with recent
/// activity is listed for, in microseconds.
pub(crate) fn windows(now: Timestamp) -> (i64, i64) {
    let minute_ago = now.saturating_sub(std::time::Duration::from_secs(60)).as_micros();
    (minute_ago, now.saturating_sub(LISTED_AFTER_ACTIVITY).as_micros())
}

pub(crate) fn assemble(counts: Vec<Count>, settings: Vec<QueueSettings>, now: Timestamp) -> Vec<QueueInfo> {
    let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
    // Queues with settings of their own are listed even when empty.
    for s in settings {
        let q = queues.entry(s.name.clone()).or_insert_with(|| QueueInfo::empty(s.name));
        q.paused = s.paused;
        q.weight = s.weight;
        q.limits = s.limits;
    }
    for c in counts {
        let q = queues.entry(c.queue.clone()).or_insert_with(|| QueueInfo::empty(c.queue.clone()));
        match c.what {
            "ready" => {
                q.ready = c.n;
                q.oldest_ready_ms = c.earliest.map(|t| now.duration_since(t).as_millis() as u64);
            }
            "scheduled" => q.scheduled = c.n,
            "running" => q.running = c.n,
            "failed" => q.failed = c.n,
            _ => q.succeeded_last_minute = c.n,
        }
    }
    queues.into_values().collect()
}
