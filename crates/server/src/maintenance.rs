//! The background loops: lease expiry, delayed-task promotion, cron schedules, and pruning (expired idempotency
//! keys, finished work past retention). All use the server's clock only.
//!
//! With several server nodes on one database, the loops run on one node at a time: the node that
//! holds the leader lease (a row in the database, taken and renewed through the store). Every
//! node runs `lead`, which keeps trying for the lease; the other loops idle while their node does
//! not lead. A leader that cannot renew stops acting at once, before its lease runs out, and one
//! that shuts down gives the lease up so another node takes over without waiting.

use std::sync::Arc;
use std::time::Duration;

use taskwarden_store::{
    AcquireLease, AddStats, ExpireLeases, PromoteDue, PruneEvents, PruneExpired, PruneFinished, ReadEvents, Store,
    Topic,
};
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
    /// Whether this node holds the leader lease now.
    pub leader: watch::Receiver<bool>,
    /// The node holding the leader lease, as this node last saw it (`None`: not known).
    pub leader_node: watch::Receiver<Option<String>>,
    /// Times the webhook loop woke to look for deliveries.
    pub webhook_looks: watch::Receiver<u64>,
}

/// The name of the lease that decides which node runs the loops.
const LEADER_LEASE: &str = "maintenance";

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> (LoopSignals, Vec<tokio::task::JoinHandle<()>>) {
    let (reaper_tx, reaper) = watch::channel(0);
    let (promoter_tx, promoter) = watch::channel(0);
    let (leader_tx, leader) = watch::channel(false);
    let (leader_node_tx, leader_node) = watch::channel(None);
    let (webhook_looks_tx, webhook_looks) = watch::channel(0);
    let handles = vec![
        tokio::spawn(lead(
            store.clone(),
            clock.clone(),
            config.node_name.clone(),
            config.leader_lease,
            shutdown.clone(),
            leader_tx,
            leader_node_tx,
        )),
        tokio::spawn(reap_expired_leases(
            store.clone(),
            clock.clone(),
            config.reap_interval,
            Leadership(leader.clone()),
            shutdown.clone(),
            reaper_tx,
        )),
        tokio::spawn(promote_due_tasks(
            store.clone(),
            clock.clone(),
            config.promote_interval,
            Leadership(leader.clone()),
            shutdown.clone(),
            promoter_tx,
        )),
        tokio::spawn(fire_crons(
            store.clone(),
            clock.clone(),
            config.clone(),
            Leadership(leader.clone()),
            shutdown.clone(),
        )),
        tokio::spawn(crate::webhooks::run(
            store.clone(),
            clock.clone(),
            config.webhook_allow.clone(),
            Leadership(leader.clone()),
            shutdown.clone(),
            webhook_looks_tx,
        )),
        tokio::spawn(roll_up_stats(store.clone(), config.stats_interval, Leadership(leader.clone()), shutdown.clone())),
        tokio::spawn(prune(store, clock, config.clone(), Leadership(leader.clone()), shutdown)),
    ];
    (LoopSignals { reaper, promoter, leader, leader_node, webhook_looks }, handles)
}

/// Takes the leader lease when it is free and renews it while held, every third of its length.
async fn lead(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    node: String,
    ttl: Duration,
    shutdown: CancellationToken,
    leader: watch::Sender<bool>,
    leader_node: watch::Sender<Option<String>>,
) {
    let acquire = |ttl| AcquireLease { name: LEADER_LEASE.into(), holder: node.clone(), ttl, now: clock.now() };
    loop {
        let leads = match store.acquire_lease(acquire(ttl)).await {
            Ok(holder) => {
                let leads = holder.holder == node;
                leader_node.send_if_modified(|seen| {
                    let changed = seen.as_deref() != Some(holder.holder.as_str());
                    *seen = Some(holder.holder);
                    changed
                });
                leads
            }
            Err(e) => {
                leader_node.send_replace(None);
                // Unsure whether the lease was renewed: stop acting now, while it is surely ours.
                tracing::warn!(error = %e, "cannot renew the leader lease");
                false
            }
        };
        if leads != *leader.borrow() {
            if leads {
                tracing::info!(node = %node, "this node now runs the background loops");
            } else {
                tracing::info!(node = %node, "this node no longer runs the background loops");
            }
            leader.send_replace(leads);
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    leader_node.send_replace(None);
    if leader.send_replace(false) {
        // Give the lease up so another node takes over at once rather than when it expires.
        let _ = store.acquire_lease(acquire(Duration::ZERO)).await;
    }
}

/// Lets a loop wait until its node leads.
pub(crate) struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// Returns false when shutting down.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            led = self.0.wait_for(|leads| *leads) => led.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    }

    pub(crate) fn leads(&self) -> bool {
        *self.0.borrow()
    }
}

/// Ends attempts whose lease ran out (the worker died, hung or was partitioned away), so their
/// tasks are retried or dead-lettered.
async fn reap_expired_leases(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut leadership: Leadership,
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
        if !leadership.wait(&shutdown).await {
            return;
        }
        let now = || ExpireLeases { now: clock.now(), limit: PASS_LIMIT };
        until_done("expired leases", "lease expiry pass failed", || store.expire_leases(now())).await;
        // Tasks not started by their expires_at, in the same pass.
        until_done("expired tasks not started in time", "task expiry pass failed", || store.expire_unstarted(now()))
            .await;
        passes.send_modify(|n| *n += 1);
    }
}

/// Runs a pass of the store's until one does less than a full pass of work (or fails), and logs
/// what it did.
async fn until_done<F, Fut>(done: &str, failed: &str, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = taskwarden_store::Result<usize>>,
{
    loop {
        match pass().await {
            // A store may delete a little more than asked (whole pages of the event log).
            Ok(n) if n as u32 >= PASS_LIMIT => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(count = n, "{done}");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{failed}");
                return;
            }
        }
    }
}

/// Moves scheduled tasks to ready when their time comes. Sleeps until the earliest `run_at`, and
/// wakes early when a task is scheduled (it may be due sooner than the one it was waiting for).
async fn promote_due_tasks(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_sleep: Duration,
    mut leadership: Leadership,
    shutdown: CancellationToken,
    passes: watch::Sender<u64>,
) {
    let mut scheduled = store.subscribe(Topic::Scheduled);
    loop {
        if !leadership.wait(&shutdown).await {
            return;
        }
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

/// Fires due cron schedules: sleeps until the next one falls due, at most a second (a schedule
/// created or resumed on another node is seen within that).
async fn fire_crons(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    mut leadership: Leadership,
    shutdown: CancellationToken,
) {
    const MAX_SLEEP: Duration = Duration::from_secs(1);
    loop {
        if !leadership.wait(&shutdown).await {
            return;
        }
        let now = clock.now();
        let fired = crate::scheduling::fire_due_crons(&*store, &config.limits, config.idempotency_window, now).await;
        let sleep = match fired {
            Ok(next) => next.map_or(MAX_SLEEP, |due| due.duration_since(now).min(MAX_SLEEP)),
            Err(e) => {
                tracing::warn!(error = %e, "cron pass failed");
                MAX_SLEEP
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A worker not heard from for this long, holding no running task, is forgotten (it is listed as
/// `lost` until then); one a token registered is kept, listed as lost, since a worker may fetch
/// only while registered and one back from a partition must still be. A day: long enough that one cut off by a partition is still listed when it
/// comes back, short enough that autoscaled workers do not pile up.
pub const FORGET_LOST_WORKERS: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Once per `prune_interval`: deletes idempotency keys older than their window, then finished
/// work past retention, a batch at a time, so each transaction stays small; then lets the
/// database reuse the space.
async fn prune(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.prune_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !leadership.leads() {
            continue;
        }
        let keys_before = clock.now().saturating_sub(config.idempotency_window);
        let workers_before = clock.now().saturating_sub(FORGET_LOST_WORKERS);
        while let Ok(n) = store.prune_expired(PruneExpired { keys_before, workers_before, limit: PASS_LIMIT }).await {
            if (n as u32) < PASS_LIMIT || shutdown.is_cancelled() {
                break;
            }
        }
        if let Some(retention) = config.retention {
            prune_finished(store.as_ref(), clock.now().saturating_sub(retention), &shutdown).await;
        }
        if let Err(e) = store.prune_stats(clock.now().saturating_sub(config.stats_retention)).await {
            tracing::warn!(error = %e, "pruning the statistics failed");
        }
        if let Err(e) = store.prune_deliveries(clock.now().saturating_sub(config.event_retention)).await {
            tracing::warn!(error = %e, "pruning the webhook delivery log failed");
        }
        let events_before = clock.now().saturating_sub(config.event_retention);
        let events = || store.prune_events(PruneEvents { before: events_before, limit: PASS_LIMIT });
        until_done("deleted events past retention", "event retention pass failed", events).await;
        // Deleted and superseded rows take space until the database is told it may reuse it.
        if let Err(e) = store.compact().await {
            tracing::warn!(error = %e, "compaction failed");
        }
    }
}

/// Events read per roll-up pass, at most: a long backlog is rolled up a pass at a time.
const ROLL_UP_PASS: usize = 50_000;

/// Every `every`, on the leader: rolls the event log up into the per-minute history, from where
/// the last roll-up stopped (see [`taskwarden_core::stats`]).
async fn roll_up_stats(store: Arc<dyn Store>, every: Duration, leadership: Leadership, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !leadership.leads() {
            continue;
        }
        loop {
            match roll_up_once(store.as_ref()).await {
                Ok(true) if !shutdown.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "rolling up the statistics failed");
                    break;
                }
            }
        }
    }
}

/// One pass: reads up to [`ROLL_UP_PASS`] events after the position and adds them up. Returns
/// whether there may be more to read.
async fn roll_up_once(store: &dyn Store) -> Result<bool, taskwarden_store::StoreError> {
    const PAGE: u32 = 5000;
    let from = store.stats_position().await?;
    let mut rollup = taskwarden_core::stats::Rollup::default();
    let mut after = from;
    let mut read = 0;
    let more = loop {
        let page = store.read_event_measures(ReadEvents { after, limit: PAGE }).await?;
        read += page.len();
        for e in &page {
            rollup.take_measured(e);
        }
        after = rollup.last.unwrap_or(after);
        if page.len() < PAGE as usize {
            break false;
        }
        if read >= ROLL_UP_PASS {
            break true;
        }
    };
    let Some(to) = rollup.last else { return Ok(false) };
    match store.add_stats(AddStats { rows: rollup.into_rows(), from, to }).await {
        Ok(()) => Ok(more),
        // Another node (a leader just before this one) rolled these up: start again from there.
        Err(taskwarden_store::StoreError::Conflict(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Deletes finished work that ended before `finished_before`, a batch at a time.
async fn prune_finished(store: &dyn Store, finished_before: taskwarden_core::Timestamp, shutdown: &CancellationToken) {
    let mut pruned = 0;
    loop {
        match store.prune_finished(PruneFinished { finished_before, limit: PASS_LIMIT }).await {
            Ok(n) => {
                pruned += n;
                if (n as u32) < PASS_LIMIT || shutdown.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, "deleted finished tasks past retention");
    }
}
