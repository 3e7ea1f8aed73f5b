//! Sends outcomes to the server in batches: whatever has queued up while the previous request was
//! in flight goes in the next one, so a busy worker makes few requests. A worker that declared
//! capacity also keeps the ids of tasks whose outcomes are on their way ([`InFlight`]), so that
//! its fetches can tell the server those tasks' resources are free already.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskwarden_client::Client;
use taskwarden_core::TaskId;
use taskwarden_core::protocol::{ItemStatus, Outcome, Report};
use tokio::sync::mpsc;

const MAX_BATCH: usize = 1000;

/// Tasks finished here whose outcomes the server has not recorded yet.
pub(crate) type InFlight = Arc<Mutex<HashSet<TaskId>>>;

pub(crate) async fn run(
    client: Client,
    worker_id: String,
    mut rx: mpsc::UnboundedReceiver<Report>,
    in_flight: Option<InFlight>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ids: Vec<TaskId> = batch.iter().map(|r| r.task_id).collect();
        send(&client, &worker_id, std::mem::take(&mut batch)).await;
        if let Some(in_flight) = &in_flight {
            let mut in_flight = in_flight.lock().expect("in-flight lock");
            for id in ids {
                in_flight.remove(&id);
            }
        }
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
                for r in results.iter().filter(|r| r.status != ItemStatus::Ok) {
                    // The task moved on (its lease expired and another attempt replaced this
                    // one): the server kept the newer attempt's outcome, as it should.
                    tracing::warn!(task_id = %r.task_id, status = ?r.status, "report refused");
                }
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
