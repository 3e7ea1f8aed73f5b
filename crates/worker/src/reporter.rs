//! Sends outcomes to the server in batches: whatever has queued up while the previous request was
//! in flight goes in the next one, so a busy worker makes few requests.

use std::time::Duration;

use taskwarden_client::Client;
use taskwarden_core::protocol::{ItemStatus, Report};
use tokio::sync::mpsc;

const MAX_BATCH: usize = 1000;

pub(crate) async fn run(client: Client, worker_id: String, mut rx: mpsc::UnboundedReceiver<Report>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut failures = 0u32;
        loop {
            match client.report(&worker_id, batch.clone()).await {
                Ok(results) => {
                    for r in results.iter().filter(|r| r.status != ItemStatus::Ok) {
                        // The task moved on (its lease expired and another attempt replaced this
                        // one): the server kept the newer attempt's outcome, as it should.
                        tracing::warn!(task_id = %r.task_id, status = ?r.status, "report refused");
                    }
                    break;
                }
                Err(e) if e.code().is_some() => {
                    tracing::error!(error = %e, "reports rejected by the server");
                    break;
                }
                Err(e) => {
                    // The server is unreachable: keep the outcomes and try again. If our leases
                    // expire meanwhile, the tasks are re-run elsewhere and these reports are refused.
                    failures += 1;
                    let pause = Duration::from_millis(50 * 2u64.pow(failures.min(7)));
                    tracing::warn!(error = %e, retry_in = ?pause, "report failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        batch.clear();
    }
}
