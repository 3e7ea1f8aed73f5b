//! What the API says about scheduling that no single store read gives: why a task cannot run
//! ("unschedulable"), worked out from the live workers the store lists, and cron schedules fired
//! by the leader.

use std::time::Duration;

use taskwarden_core::cron::{CronInfo, Schedule, due};
use taskwarden_core::placement::{Candidate, WorkerView, unschedulable_reason};
use taskwarden_core::protocol::QueueInfo;
use taskwarden_core::{Limits, NewTask, Task, TaskState, Timestamp};
use taskwarden_store::{FireCron, Store};

/// A worker not heard from (heartbeat or registration) for this long is not counted as live.
pub const LIVE_WINDOW: Duration = Duration::from_secs(30);

/// The workers heard from within [`LIVE_WINDOW`].
pub(crate) async fn live_workers(store: &dyn Store, now: Timestamp) -> taskwarden_store::Result<Vec<WorkerView>> {
    let since = now.saturating_sub(LIVE_WINDOW);
    Ok(store
        .list_workers()
        .await?
        .into_iter()
        .filter(|w| w.last_seen_at >= since)
        .map(|w| WorkerView {
            queues: w.queues,
            capacity: w.capacity,
            used: Default::default(),
            labels: w.labels,
            free_slots: w.concurrency.saturating_sub(w.running),
            running: w.running,
            kinds: w.kinds,
        })
        .collect())
}

fn candidate(queue: &str, kind: Option<&str>, needs: &taskwarden_core::Needs) -> Candidate {
    Candidate {
        kind: kind.map(str::to_owned),
        queue: queue.to_owned(),
        priority: 0,
        ready_since: Timestamp::from_micros(0),
        resources: needs.resources.clone(),
        labels: needs.labels.clone(),
    }
}

/// Fills in why a waiting task cannot run, if no live worker could run it.
pub(crate) async fn explain(store: &dyn Store, task: &mut Task, now: Timestamp) -> taskwarden_store::Result<()> {
    if matches!(task.state, TaskState::Ready | TaskState::Scheduled) {
        let workers = live_workers(store, now).await?;
        task.unschedulable = unschedulable_reason(&candidate(&task.queue, Some(&task.kind), &task.needs), &workers);
    }
    Ok(())
}

/// Counts each queue's ready tasks that no live worker could run.
pub(crate) async fn count_unschedulable(
    store: &dyn Store,
    queues: &mut [QueueInfo],
    now: Timestamp,
) -> taskwarden_store::Result<()> {
    let workers = live_workers(store, now).await?;
    let served = |q: &str| workers.iter().any(|w| w.queues.iter().any(|x| x == q));
    for q in queues.iter_mut().filter(|q| q.ready > 0 && !served(&q.name)) {
        q.unschedulable = q.ready;
    }
    for group in store.ready_needs().await? {
        if !served(&group.queue) {
            continue; // counted whole above
        }
        if unschedulable_reason(&candidate(&group.queue, None, &group.needs), &workers).is_some()
            && let Some(q) = queues.iter_mut().find(|q| q.name == group.queue)
        {
            q.unschedulable += group.count;
        }
    }
    // Kinds no live worker of the queue has a handler for (only workers that say which kinds
    // they run can lack one).
    if workers.iter().any(|w| !w.kinds.is_empty()) {
        let no_needs = taskwarden_core::Needs::default();
        for group in store.ready_kinds().await? {
            if served(&group.queue)
                && unschedulable_reason(&candidate(&group.queue, Some(&group.kind), &no_needs), &workers).is_some()
                && let Some(q) = queues.iter_mut().find(|q| q.name == group.queue)
            {
                q.unschedulable += group.count;
            }
        }
    }
    for q in queues.iter_mut() {
        q.unschedulable = q.unschedulable.min(q.ready); // a task held back on two counts is one
    }
    Ok(())
}

/// Fires every due, unpaused schedule once: its due ticks (per its misfire policy) become tasks
/// keyed by schedule and tick, and the schedule moves on, in one transaction that a second node
/// doing the same finds already done. Returns when the next schedule falls due.
pub(crate) async fn fire_due_crons(
    store: &dyn Store,
    limits: &Limits,
    idempotency_window: Duration,
    now: Timestamp,
) -> taskwarden_store::Result<Option<Timestamp>> {
    let mut next_due: Option<Timestamp> = None;
    for cron in store.list_crons().await? {
        if cron.paused {
            continue;
        }
        if cron.next_run_at > now {
            next_due = Some(next_due.map_or(cron.next_run_at, |n| n.min(cron.next_run_at)));
            continue;
        }
        let Some((tasks, next_run)) = plan(&cron, limits, now) else { continue };
        let fire = FireCron {
            name: cron.spec.name.clone(),
            expected_next_run: cron.next_run_at,
            next_run,
            tasks,
            idempotency_window,
            now,
        };
        if store.fire_cron(fire).await? {
            tracing::debug!(schedule = %cron.spec.name, "cron schedule fired");
        }
        if let Some(n) = next_run {
            next_due = Some(next_due.map_or(n, |d| d.min(n)));
        }
    }
    Ok(next_due)
}

/// The tasks a due schedule submits now, and its next tick.
fn plan(cron: &CronInfo, limits: &Limits, now: Timestamp) -> Option<(Vec<NewTask>, Option<Timestamp>)> {
    let spec = &cron.spec;
    let schedule = match Schedule::parse(&spec.schedule, &spec.timezone) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(schedule = %spec.name, error = %e, "a stored cron schedule does not parse");
            return None;
        }
    };
    let firing = due(&schedule, cron.next_run_at, now, spec.misfire, spec.catch_up_limit());
    if firing.skipped > 0 {
        tracing::info!(schedule = %spec.name, skipped = firing.skipped, "missed cron ticks skipped");
    }
    let mut tasks = Vec::with_capacity(firing.ticks.len());
    for tick in firing.ticks {
        let mut template = spec.task.clone();
        template.idempotency_key = Some(spec.tick_key(tick));
        match template.validate(limits, now) {
            Ok(mut task) => {
                task.run_at = Some(tick.min(now));
                tasks.push(task);
            }
            Err(e) => tracing::warn!(schedule = %spec.name, error = %e, "a cron task template is refused"),
        }
    }
    Some((tasks, firing.next_run))
}
