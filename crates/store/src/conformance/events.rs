//! Conformance cases for the event log: one event per state change, in the change's
//! transaction, read forward by id, pruned by age.

use taskwarden_core::events::{Event, EventId};
use taskwarden_core::protocol::{HeldLease, Outcome};
use taskwarden_core::workflow::FailurePolicy;
use taskwarden_core::{Progress, Task};

use super::{at, fetch, lease_ready, report, spec, submit, submit_one, success, workflow};
use crate::params::*;
use crate::{Store, StoreError};

/// The events after `after`, once at least `n` can be read. On PostgreSQL a reader sees a
/// transaction's events only when every transaction that began before it (in any database of the
/// cluster, so other tests' too) has ended; that takes a moment when tests run side by side.
async fn events_after(store: &dyn Store, after: EventId, n: usize) -> Vec<Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = store.read_events(ReadEvents { after, limit: 1000 }).await.unwrap();
        if events.len() >= n || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.event_type.as_str()).collect()
}

fn of_task(events: &[Event], task: &Task) -> Vec<&'static str> {
    let mine: Vec<Event> = events.iter().filter(|e| e.event.task_id == Some(task.id)).cloned().collect();
    types(&mine)
}

pub async fn every_state_change_appends_its_event_in_order(store: &dyn Store) {
    let start = store.last_event_id().await.unwrap();
    let mut tagged = spec("ev");
    tagged.tags = vec!["vip".into()];
    let [a, b]: [Task; 2] = submit(store, vec![tagged, spec("ev")], at(0)).await.try_into().unwrap();
    let leased = fetch(store, &["ev"], 2, at(1)).await;
    let (la, lb) = (leased.iter().find(|t| t.id == a.id).unwrap(), leased.iter().find(|t| t.id == b.id).unwrap());
    let fail = Outcome::Failed { error: "boom".into(), retry_after_ms: Some(60_000), permanent: false };
    report(store, la, fail, at(2)).await.unwrap();
    let progress = Some(Progress { fraction: 0.5, message: Some("half".into()) });
    let beat = |progress| Heartbeat {
        worker_id: None,
        leases: vec![HeldLease { task_id: b.id, lease: lb.lease.as_ref().unwrap().token, progress, logs: Vec::new() }],
        now: at(3),
    };
    store.heartbeat(beat(None)).await.unwrap();
    store.heartbeat(beat(progress)).await.unwrap();
    report(store, lb, success("7"), at(4)).await.unwrap();
    store.cancel(CancelTask { id: a.id, now: at(5) }).await.unwrap();
    store.retry(RetryTask { id: a.id, now: at(6) }).await.unwrap();
    let pause =
        |paused| UpdateQueue { queue: "ev".into(), paused: Some(paused), weight: None, limits: None, now: at(7) };
    store.update_queue(pause(true)).await.unwrap();
    store.update_queue(pause(false)).await.unwrap();

    let events = events_after(store, start, 11).await;
    assert_eq!(
        types(&events),
        [
            "task.submitted",
            "task.submitted",
            "task.started",
            "task.started",
            "task.retrying",
            "task.progress",
            "task.succeeded",
            "task.cancelled",
            "task.retried",
            "queue.paused",
            "queue.resumed"
        ],
        "a heartbeat without progress is no event"
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids increase: {events:?}");
    assert!(events[0].id > start);
    assert_eq!(
        of_task(&events, &a),
        ["task.submitted", "task.started", "task.retrying", "task.cancelled", "task.retried"]
    );
    let first = &events[0].event;
    assert_eq!((first.queue.as_deref(), first.kind.as_deref(), first.task_id), (Some("ev"), Some("echo"), Some(a.id)));
    assert_eq!(first.tags, ["vip"]);
    assert_eq!(first.at, at(0));
    let retrying = &events[4].event;
    assert_eq!((retrying.attempt, retrying.data["error"].as_str()), (Some(1), Some("boom")));
    assert_eq!(retrying.data["run_at"], serde_json::json!(at(60_002)));
    assert_eq!(events[5].event.data["message"], "half");
    assert_eq!(events[9].event.queue.as_deref(), Some("ev"));

    // Reading resumes after any id, a page at a time, and ends at the last.
    let rest = events_after(store, events[3].id, 7).await;
    assert_eq!(rest, events[4..].to_vec());
    let page = store.read_events(ReadEvents { after: start, limit: 3 }).await.unwrap();
    assert_eq!(page, events[..3].to_vec());
    assert_eq!(store.last_event_id().await.unwrap(), events.last().unwrap().id);
    assert!(events_after(store, events.last().unwrap().id, 0).await.is_empty());

    // What the roll-up reads of them (the database picks `data`'s numbers out) is what it would
    // take of the whole events.
    // A store may hand over runs of events it summed as it wrote them: what counts is that
    // they roll up alike, and end at the same event.
    use taskwarden_core::stats::{EventMeasure, Rollup};
    let rolled = |measured: &[taskwarden_core::stats::Measured]| {
        let mut r = Rollup::default();
        measured.iter().for_each(|m| r.take_measured(m));
        (r.last, r.into_rows())
    };
    let whole = |events: &[Event]| {
        let mut r = Rollup::default();
        events.iter().for_each(|e| r.take(e));
        (r.last, r.into_rows())
    };
    let measures = store.read_event_measures(ReadEvents { after: start, limit: 1000 }).await.unwrap();
    assert_eq!(rolled(&measures), whole(&events));
    let each: Vec<_> = events.iter().map(EventMeasure::of).collect();
    assert!(each.iter().any(|m| m.run_us.is_some()) && each.iter().any(|m| m.wait_us.is_some()));
    let page = store.read_event_measures(ReadEvents { after: events[3].id, limit: 2 }).await.unwrap();
    assert!(!page.is_empty() && page.len() <= 2);
    let (last, _) = rolled(&page);
    let upto = events.iter().position(|e| Some(e.id) == last).expect("the page ends at an event");
    assert_eq!(rolled(&page), whole(&events[4..=upto]));
}

pub async fn a_refused_change_appends_no_event(store: &dyn Store) {
    let mut keyed = spec("ev");
    keyed.idempotency_key = Some("k".into());
    let t = submit_one(store, keyed.clone(), at(0)).await;
    let after_submit = events_after(store, EventId::START, 1).await[0].id;
    // The same key again: the first task, nothing new. A different payload: refused, rolled back.
    submit_one(store, keyed.clone(), at(1)).await;
    let mut other = keyed;
    other.payload = serde_json::value::RawValue::from_string("2".into()).unwrap();
    let fresh = spec("ev");
    let refused = store
        .submit(SubmitTasks {
            tasks: vec![fresh, other],
            idempotency_window: std::time::Duration::from_secs(60),
            now: at(2),
        })
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{:?}", refused.err());
    let leased = fetch(store, &["ev"], 1, at(3)).await.remove(0);
    assert_eq!(leased.id, t.id);
    let stale = Task {
        lease: Some(taskwarden_core::Lease { token: taskwarden_core::LeaseToken(1), ..leased.lease.clone().unwrap() }),
        ..leased.clone()
    };
    assert!(matches!(report(store, &stale, success("1"), at(4)).await, Err(StoreError::LeaseLost)));
    let events = events_after(store, after_submit, 1).await;
    assert_eq!(types(&events), ["task.started"], "only the lease: {events:?}");
}

pub async fn a_workflow_appends_its_start_its_tasks_and_its_decision(store: &dyn Store) {
    let start = store.last_event_id().await.unwrap();
    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"])])).await.unwrap();
    let ready = lease_ready(store, at(1)).await;
    report(store, &ready["a"], success("1"), at(2)).await.unwrap();
    let ready = lease_ready(store, at(3)).await;
    report(store, &ready["b"], success("2"), at(4)).await.unwrap();
    let events = events_after(store, start, 8).await;
    assert_eq!(
        types(&events),
        [
            "workflow.started",
            "task.submitted",
            "task.submitted",
            "task.started",
            "task.succeeded",
            "task.started",
            "task.succeeded",
            "workflow.succeeded"
        ]
    );
    assert!(events.iter().all(|e| e.event.workflow_id == Some(wf.id)), "every event names the workflow");
    assert_eq!(events[0].event.queue, None);
}

pub async fn events_past_retention_are_pruned_and_ids_are_never_reused(store: &dyn Store) {
    let start = store.last_event_id().await.unwrap();
    submit(store, vec![spec("old"), spec("old")], at(0)).await;
    submit_one(store, spec("new"), at(10_000)).await;
    let all = events_after(store, start, 3).await;
    assert_eq!(all.len(), 3);
    // A batch at a time; a store that keeps its events in pages deletes whole pages (here, the
    // two events of one submit may share one).
    let first = store.prune_events(PruneEvents { before: at(5_000), limit: 1 }).await.unwrap();
    assert!((1..=2).contains(&first), "a batch at a time: {first}");
    let second = store.prune_events(PruneEvents { before: at(5_000), limit: 100 }).await.unwrap();
    assert_eq!(first + second, 2);
    assert_eq!(store.prune_events(PruneEvents { before: at(5_000), limit: 100 }).await.unwrap(), 0);
    assert_eq!(events_after(store, start, 1).await, all[2..].to_vec());
    let last = all[2].id;
    let all_old = PruneEvents { before: at(20_000), limit: 100 };
    assert_eq!(store.prune_events(all_old).await.unwrap(), 0, "the newest event is always kept");
    assert_eq!(events_after(store, start, 1).await, all[2..].to_vec());
    let later = submit_one(store, spec("new"), at(20_001)).await;
    events_after(store, last, 1).await;
    assert_eq!(store.prune_events(PruneEvents { before: at(30_000), limit: 100 }).await.unwrap(), 1);
    let after = events_after(store, start, 1).await;
    assert_eq!(after.len(), 1, "only the newest is left");
    assert_eq!(after[0].event.task_id, Some(later.id));
    assert!(after[0].id > last, "ids go on past every id ever given");
}

pub async fn concurrent_changes_are_each_read_once_in_id_order(store: &dyn Store) {
    let start = store.last_event_id().await.unwrap();
    let submits = (0..40).map(|i| async move { submit_one(store, spec(&format!("c{}", i % 4)), at(i)).await });
    let tasks = super::futures_join(submits.collect()).await;
    // Read while nothing runs, then after: each event once, in id order.
    let events = events_after(store, start, 40).await;
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let mut ids: Vec<_> = events.iter().filter_map(|e| e.event.task_id).collect();
    ids.sort();
    let mut want: Vec<_> = tasks.iter().map(|t| t.id).collect();
    want.sort();
    assert_eq!(ids, want);
}

/// A big batch, over minutes and queues, then its leases and outcomes: read for the roll-up from
/// anywhere in it, a page at a time or all at once, it adds up as its events one by one do.
pub async fn what_the_roll_up_reads_adds_up_as_the_events_do_from_anywhere(store: &dyn Store) {
    use taskwarden_core::stats::Rollup;
    let start = store.last_event_id().await.unwrap();
    let specs: Vec<_> = (0..600).map(|i| spec(&format!("m{}", i % 3))).collect();
    submit(store, specs, at(59_000)).await;
    for q in ["m0", "m1", "m2"] {
        let leased = fetch(store, &[q], 500, at(61_000)).await;
        assert_eq!(leased.len(), 200);
        let reports = leased
            .iter()
            .map(|t| taskwarden_core::protocol::Report::new(t.id, t.lease.as_ref().unwrap().token, success("1")))
            .collect();
        store.report(ReportOutcomes { worker_id: None, reports, now: at(61_500) }).await.unwrap();
    }
    let mut events = events_after(store, start, 1_000).await;
    events.extend(events_after(store, events.last().unwrap().id, 800).await);
    assert_eq!(events.len(), 1_800);
    let whole = |events: &[Event]| {
        let mut r = Rollup::default();
        events.iter().for_each(|e| r.take(e));
        (r.last, r.into_rows())
    };
    for from in [0, 1, 255, 256, 300, 599, 1_000, 1_799] {
        let after = if from == 0 { start } else { events[from - 1].id };
        for limit in [7, 5_000] {
            let mut rolled = Rollup::default();
            let mut position = after;
            loop {
                let page = store.read_event_measures(ReadEvents { after: position, limit }).await.unwrap();
                assert!(page.len() <= limit as usize);
                page.iter().for_each(|m| rolled.take_measured(m));
                match rolled.last {
                    Some(last) if last != position => position = last,
                    _ => break,
                }
            }
            assert_eq!((rolled.last, rolled.into_rows()), whole(&events[from..]), "from event {from}, limit {limit}");
        }
    }
}

pub async fn stats_add_up_by_minute_and_queue_and_each_stretch_is_added_once(store: &dyn Store) {
    use taskwarden_core::stats::StatsRow;
    assert_eq!(store.stats_position().await.unwrap(), EventId::START);
    let row = |ms: i64, queue: &str, submitted: u64| StatsRow {
        minute: at(ms),
        queue: queue.into(),
        submitted,
        run_us_sum: 10,
        run_count: 1,
        ..StatsRow::default()
    };
    let (five, nine) = (EventId { tx: 0, seq: 5 }, EventId { tx: 0, seq: 9 });
    let add = |rows, from, to| store.add_stats(AddStats { rows, from, to });
    add(vec![row(0, "a", 2), row(0, "b", 1)], EventId::START, five).await.unwrap();
    let again = add(vec![row(0, "a", 100)], EventId::START, five).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "the same stretch twice: {again:?}");
    add(vec![row(0, "a", 3), row(60_000, "a", 1)], five, nine).await.unwrap();
    assert_eq!(store.stats_position().await.unwrap(), nine);

    let read = |queue: Option<&str>, since, until| {
        store.read_stats(ReadStats { queue: queue.map(str::to_owned), since, until, limit: 100 })
    };
    let all = read(None, at(0), at(120_000)).await.unwrap();
    let got: Vec<(taskwarden_core::Timestamp, &str, u64, u64)> =
        all.iter().map(|r| (r.minute, r.queue.as_str(), r.submitted, r.run_count)).collect();
    assert_eq!(got, [(at(0), "a", 5, 2), (at(0), "b", 1, 1), (at(60_000), "a", 1, 1)]);
    assert_eq!(all[0].run_us_sum, 20);
    let later = read(Some("a"), at(30_000), at(120_000)).await.unwrap();
    assert_eq!(later, all[2..].to_vec());
    assert_eq!(store.prune_stats(at(60_000)).await.unwrap(), 2);
    assert_eq!(read(None, at(0), at(120_000)).await.unwrap(), all[2..].to_vec());
}

/// Run against a store opened with its event log off (not part of [`conformance_tests!`],
/// which opens stores with the defaults): tasks, workflows and queues work as ever, and none of
/// it appends an event.
pub async fn with_the_event_log_off_changes_append_no_events(store: &dyn Store) {
    let start = store.last_event_id().await.unwrap();
    let [a, b]: [Task; 2] = submit(store, vec![spec("quiet"), spec("quiet")], at(0)).await.try_into().unwrap();
    let leased = fetch(store, &["quiet"], 2, at(1)).await;
    assert_eq!(leased.len(), 2);
    let done = report(store, leased.iter().find(|t| t.id == a.id).unwrap(), success("7"), at(2)).await.unwrap();
    assert_eq!(done.state, taskwarden_core::TaskState::Succeeded);
    store.cancel(CancelTask { id: b.id, now: at(3) }).await.unwrap();
    let pause = UpdateQueue { queue: "quiet".into(), paused: Some(true), weight: None, limits: None, now: at(4) };
    store.update_queue(pause).await.unwrap();
    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[])])).await.unwrap();
    let ready = lease_ready(store, at(5)).await;
    report(store, &ready["a"], success("1"), at(6)).await.unwrap();
    assert_eq!(store.get_workflow(wf.id).await.unwrap().state, taskwarden_core::workflow::WorkflowState::Succeeded);

    // On PostgreSQL an appended event shows once older transactions elsewhere have ended:
    // look for a while before saying there is none.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let events = store.read_events(ReadEvents { after: start, limit: 100 }).await.unwrap();
        assert!(events.is_empty(), "the log is off, yet it holds {events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(store.last_event_id().await.unwrap(), start);
}
