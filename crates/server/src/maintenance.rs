//! The background loops: lease expiry, delayed-task promotion and pruning of expired idempotency
//! keys. All use the server's clock only.

use std::sync::Arc;
use std::time::Duration;

use taskwarden_store::{ExpireLeases, PromoteDue, PruneExpired, Store, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ServerConfig;

/// Most tasks one pass handles before looping straight into the next; keeps each write group small.
const PASS_LIMIT: u32 = 1000;

/// Counts finished passes of each loop, so tests can wait for the next pass instead of sleeping.
#[derive(Clone)]
pub struct LoopSignals {
    pub reaper: watch::Receiver<u64>,
    pub promoter: watch::Receiver<u64>,
}

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> (LoopSignals, Vec<tokio::task::JoinHandle<()>>) {
    let (reaper_tx, reaper) = watch::channel(0);
    let (promoter_tx, promoter) = watch::channel(0);
    let handles = vec![
        tokio::spawn(reap_expired_leases(
            store.clone(),
            clock.clone(),
            config.reap_interval,
            shutdown.clone(),
            reaper_tx,
        )),
        tokio::spawn(promote_due_tasks(
            store.clone(),
            clock.clone(),
            config.promote_interval,
            shutdown.clone(),
            promoter_tx,
        )),
        tokio::spawn(prune_expired(store, clock, config.idempotency_window, shutdown)),
    ];
    (LoopSignals { reaper, promoter }, handles)
}

/// Ends attempts whose lease ran out (the worker died, hung or was partitioned away), so their
/// tasks are retried or dead-lettered.
async fn reap_expired_leases(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    shutdown: CancellationToken,
    passes: watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            match store.expire_leases(ExpireLeases { now: clock.now(), limit: PASS_LIMIT }).await {
                Ok(n) if n as u32 == PASS_LIMIT => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(expired = n, "expired leases");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease expiry pass failed");
                    break;
                }
            }
        }
        passes.send_modify(|n| *n += 1);
    }
}

/// Moves scheduled tasks to ready when their time comes. Sleeps until the earliest `run_at`, and
/// wakes early when a task is scheduled (it may be due sooner than the one it was waiting for).
async fn promote_due_tasks(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_sleep: Duration,
    shutdown: CancellationToken,
    passes: watch::Sender<u64>,
) {
    let mut scheduled = store.subscribe(Topic::Scheduled);
    loop {
        scheduled.borrow_and_update();
        let now = clock.now();
        let sleep = match store.promote_due(PromoteDue { now, limit: PASS_LIMIT }).await {
            Ok(p) if p.promoted as u32 == PASS_LIMIT => Duration::ZERO,
            Ok(p) => p.next_due.map_or(max_sleep, |due| due.duration_since(now).min(max_sleep)),
            Err(e) => {
                tracing::warn!(error = %e, "promotion pass failed");
                max_sleep
            }
        };
        passes.send_modify(|n| *n += 1);
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = scheduled.changed() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Deletes idempotency keys older than their window, a batch at a time, once a minute.
async fn prune_expired(store: Arc<dyn Store>, clock: Arc<dyn Clock>, window: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let keys_before = clock.now().saturating_sub(window);
        while let Ok(n) = store.prune_expired(PruneExpired { keys_before, limit: PASS_LIMIT }).await {
            if (n as u32) < PASS_LIMIT {
                break;
            }
        }
    }
}
