//! Gets outcomes to the server. Finished executions put their outcomes in the [`Outbox`]; a
//! busy worker's next fetch carries them (one request reports and asks for more), and the
//! reporter sends in a batch of its own only what no fetch is about to carry: when every fetcher
//! is parked on the server or idle. A worker that declared capacity also keeps the ids of tasks
//! whose outcomes are on their way ([`InFlight`]), so that its fetches can tell the server those
//! tasks' resources are free already.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskwarden_client::Client;
use taskwarden_core::TaskId;
use taskwarden_core::protocol::{ItemStatus, Outcome, Report, ReportResult};
use tokio::sync::Notify;

/// How long outcomes may wait for a fetch to carry them before the reporter sends them itself.
const CARRY_WITHIN: Duration = Duration::from_millis(50);
/// Most outcomes one request carries.
const MAX_BATCH: usize = 1000;
/// Most result bytes a fetch carries; larger outcomes wait for the reporter, which splits batches
/// the server finds too large, so a fetch is never refused for its reports.
const MAX_CARRIED_BYTES: usize = 256 << 10;

/// Tasks finished here whose outcomes the server has not recorded yet.
pub(crate) type InFlight = Arc<Mutex<HashSet<TaskId>>>;

/// Outcomes waiting to be sent.
#[derive(Default)]
pub(crate) struct Outbox {
    /// With when each outcome was queued: a report says how long ago its task finished.
    pending: Mutex<Vec<(Report, Instant)>>,
    /// Fetchers that will send a fetch soon: waiting for a free slot, or fetching without
    /// waiting. While there is one, the reporter leaves outcomes for it to carry; a slot frees
    /// right after each outcome is queued, so such a fetcher is on its way.
    carriers: AtomicUsize,
    /// Rung when an outcome is queued, a fetcher stops carrying, or the outbox closes.
    ring: Notify,
    /// A fetch left outcomes behind (too many or too large to carry): the reporter sends them
    /// even while fetchers carry.
    left_behind: AtomicBool,
    closed: AtomicBool,
}

impl Outbox {
    pub fn push(&self, report: Report) {
        self.pending.lock().expect("outbox lock").push((report, Instant::now()));
        self.ring.notify_one();
    }

    /// Puts back outcomes a request did not deliver, ahead of newer ones.
    pub fn put_back(&self, reports: Vec<Report>) {
        if reports.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut reports: Vec<(Report, Instant)> = reports
            .into_iter()
            .map(|r| {
                let ago = Duration::from_micros(r.done_ago_us.unwrap_or(0));
                (r, now.checked_sub(ago).unwrap_or(now))
            })
            .collect();
        let mut pending = self.pending.lock().expect("outbox lock");
        reports.append(&mut pending);
        *pending = reports;
        drop(pending);
        self.ring.notify_one();
    }

    /// Outcomes for a fetch to carry: up to [`MAX_BATCH`] and [`MAX_CARRIED_BYTES`] of results.
    pub fn take_for_fetch(&self) -> Vec<Report> {
        let mut pending = self.pending.lock().expect("outbox lock");
        let mut bytes = 0;
        let n = pending
            .iter()
            .take(MAX_BATCH)
            .take_while(|(r, _)| {
                bytes += match &r.outcome {
                    Outcome::Succeeded { result } => result.get().len(),
                    Outcome::Failed { error, .. } => error.len(),
                    _ => 0,
                };
                bytes <= MAX_CARRIED_BYTES
            })
            .count();
        if n < pending.len() {
            self.left_behind.store(true, Ordering::SeqCst);
            self.ring.notify_one();
        }
        let taken = pending.drain(..n);
        taken.map(stamped).collect()
    }

    /// A fetcher will fetch soon, and will carry what is queued.
    pub fn carrying(&self) {
        self.carriers.fetch_add(1, Ordering::SeqCst);
    }

    /// A fetcher parks or stops: the reporter sends what is queued unless another fetcher will.
    pub fn not_carrying(&self) {
        self.carriers.fetch_sub(1, Ordering::SeqCst);
        // After the count went down: either the reporter saw the lower count, or it sees this.
        if !self.pending.lock().expect("outbox lock").is_empty() {
            self.ring.notify_one();
        }
    }

    /// No more outcomes will come: the reporter sends what is left and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ring.notify_one();
    }
}

/// A queued outcome as it is sent: saying how long ago its task finished, so the server dates
/// the attempt's end to when it ended here, not to when the report arrived.
fn stamped((mut report, queued): (Report, Instant)) -> Report {
    report.done_ago_us = Some(queued.elapsed().as_micros() as u64);
    report
}

/// Sends, in batches of its own, the outcomes no fetch is about to carry; returns once the outbox
/// is closed and empty, with the number of batches it sent.
pub(crate) async fn run(client: Client, worker_id: String, outbox: Arc<Outbox>, in_flight: Option<InFlight>) -> u64 {
    let mut sent = 0;
    loop {
        // With outcomes waiting, look again after a while even if nobody rings: a fetcher that
        // counted as about to carry them may not get to (a failing server, a slow fetch).
        let waiting = !outbox.pending.lock().expect("outbox lock").is_empty();
        let overdue = match waiting {
            true => tokio::time::timeout(CARRY_WITHIN, outbox.ring.notified()).await.is_err(),
            false => {
                outbox.ring.notified().await;
                false
            }
        };
        loop {
            let closed = outbox.closed.load(Ordering::SeqCst);
            let left_behind = outbox.left_behind.swap(false, Ordering::SeqCst);
            if !closed && !left_behind && !overdue && outbox.carriers.load(Ordering::SeqCst) > 0 {
                break; // a fetcher will carry them
            }
            let batch: Vec<Report> = {
                let mut pending = outbox.pending.lock().expect("outbox lock");
                let n = pending.len().min(MAX_BATCH);
                pending.drain(..n).map(stamped).collect()
            };
            if batch.is_empty() {
                if closed {
                    return sent;
                }
                break;
            }
            let ids: Vec<TaskId> = batch.iter().map(|r| r.task_id).collect();
            send(&client, &worker_id, batch).await;
            sent += 1;
            delivered(in_flight.as_ref(), &ids);
        }
    }
}

/// Outcomes the server has answered for: their tasks no longer count as finished-but-unreported.
pub(crate) fn delivered(in_flight: Option<&InFlight>, ids: &[TaskId]) {
    if let Some(in_flight) = in_flight {
        let mut in_flight = in_flight.lock().expect("in-flight lock");
        for id in ids {
            in_flight.remove(id);
        }
    }
}

/// Logs the outcomes the server refused.
pub(crate) fn note_refusals(results: &[ReportResult]) {
    for r in results.iter().filter(|r| r.status != ItemStatus::Ok) {
        // The task moved on (its lease expired and another attempt replaced this one): the
        // server kept the newer attempt's outcome, as it should.
        tracing::warn!(task_id = %r.task_id, status = ?r.status, "report refused");
    }
}

/// Delivers one batch, retrying while the server is unreachable or unavailable, and splitting it
/// when it is too large for the server's body limit. Outcomes are dropped only when the server
/// refuses them for good; their tasks then run again once their leases expire.
async fn send(client: &Client, worker_id: &str, batch: Vec<Report>) {
    let mut pending = vec![batch];
    let mut failures = 0u32;
    while let Some(mut batch) = pending.pop() {
        match client.report(worker_id, batch.clone()).await {
            Ok(results) => {
                failures = 0;
                note_refusals(&results);
            }
            Err(e) if e.status() == Some(413) => {
                if batch.len() > 1 {
                    let tail = batch.split_off(batch.len() / 2);
                    pending.push(tail);
                    pending.push(batch);
                } else {
                    let report = batch.pop().expect("one report");
                    let error = "the result is larger than the server accepts".to_owned();
                    let failed = Outcome::Failed { error, retry_after_ms: None, permanent: true };
                    pending.push(vec![Report { outcome: failed, ..report }]);
                }
            }
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::error!(error = %e, reports = batch.len(), "reports refused by the server");
            }
            Err(e) => {
                // Unreachable or unavailable (5xx): keep the outcomes and try again. If our leases
                // expire meanwhile, the tasks run elsewhere and these reports are refused.
                failures += 1;
                let pause = Duration::from_millis(50 * 2u64.pow(failures.min(7)));
                tracing::warn!(error = %e, retry_in = ?pause, "report failed");
                tokio::time::sleep(pause).await;
                pending.push(batch);
            }
        }
    }
}
