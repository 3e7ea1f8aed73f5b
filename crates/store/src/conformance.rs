//! The storage conformance suite: behaviour every [`Store`] backend must show, written once and run
//! unchanged against each backend.
//!
//! A backend's test file calls [`conformance_tests!`](crate::conformance_tests) with an async
//! expression that builds a fresh, empty store wrapped in a [`Harness`]:
//!
//! ```ignore
//! taskwarden_store::conformance_tests!(my_backend_harness());
//! ```
//!
//! Time is passed in explicitly (`at(ms)`), so the cases never sleep and never read a clock.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use taskwarden_core::protocol::{HeldLease, ItemStatus, Outcome, QueueInfo, Report, SubmitTask};
use taskwarden_core::{AttemptOutcome, Backoff, Cancellation, Limits, NewTask, Task, TaskState, Timestamp};

use crate::params::*;
use crate::{Store, StoreError};
use taskwarden_core::TaskId;
use taskwarden_core::search::TaskSearch;

/// A fresh store and whatever must live as long as it (a temporary directory, a schema).
pub struct Harness {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send>,
}

impl Harness {
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send) -> Self {
        Harness { store, _guard: Box::new(guard) }
    }
}

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            submitted_task_can_be_read_back,
            a_task_keeps_its_traceparent,
            delayed_task_is_scheduled_until_promoted,
            a_task_not_started_by_its_expires_at_expires,
            batch_returns_tasks_in_request_order,
            idempotency_key_returns_the_first_task_within_the_window,
            fetch_takes_highest_priority_first_then_oldest,
            fetch_serves_only_the_named_queues_up_to_the_limit,
            completion_with_the_current_lease_is_recorded_once,
            expired_lease_is_reassigned_and_stale_completion_is_rejected,
            failure_retries_with_backoff_then_dead_letters,
            heartbeat_extends_the_lease_and_carries_cancellation,
            cancel_stops_a_waiting_task_at_once,
            manual_retry_revives_a_dead_letter,
            released_task_is_ready_again,
            list_filters_and_paginates_newest_first,
            search_finds_tasks_by_fields_errors_times_and_windows,
            topics_announce_ready_and_finished_tasks,
            workers_are_listed_with_their_running_tasks,
            concurrent_submits_are_all_stored,
            a_waiting_fetch_is_handed_a_task_submitted_later,
            a_fetch_that_stopped_waiting_takes_nothing,
            expired_idempotency_keys_are_pruned,
            workers_lost_long_ago_are_forgotten_unless_they_hold_a_task,
            queues_stay_listed_an_hour_after_their_last_task_and_settings_can_be_forgotten,
            an_attempt_is_dated_by_the_run_time_its_worker_reports,
            workflows_are_listed_newest_first_by_state_and_name_a_page_at_a_time,
            a_cron_schedule_is_changed_in_place,
            a_workflow_runs_in_dependency_order_and_returns_its_sinks_result,
            fail_fast_cancels_what_has_not_finished,
            collect_runs_the_children_of_failed_parents,
            a_quorum_decides_as_soon_as_enough_tasks_succeeded,
            cancelling_a_workflow_cancels_its_unfinished_tasks,
            a_running_task_fans_out_and_its_join_gathers_in_child_order,
            a_nested_fan_out_holds_the_outer_join_until_it_is_done,
            a_child_retried_after_its_lease_expired_counts_once,
            a_quorum_fan_out_runs_its_join_early_and_cancels_the_rest,
            a_collecting_fan_out_hands_failures_to_its_join,
            a_fail_fast_fan_out_cancels_its_join_and_fails_the_workflow,
            finished_work_past_retention_is_pruned,
            a_named_lease_has_one_holder_until_it_expires,
            a_paused_queue_leases_nothing_until_resumed,
            a_fetch_from_several_queues_follows_their_weights,
            an_old_low_priority_task_overtakes_newer_high_priority_ones,
            queues_are_listed_with_their_counts,
            tasks_go_only_to_workers_with_their_labels_and_free_capacity,
            a_worker_that_names_its_kinds_is_leased_no_other,
            the_schema_registered_last_for_a_kind_is_in_force,
            a_big_task_keeps_the_capacity_it_waits_for,
            tasks_a_worker_says_it_finished_free_their_resources,
            concurrency_limits_hold_per_queue_and_per_key,
            rate_limits_let_a_burst_through_then_tasks_wait_for_tokens,
            a_handed_off_task_goes_to_the_least_loaded_waiting_worker,
            only_a_lost_worker_holding_nothing_can_be_removed,
            a_cron_tick_fires_once_however_many_nodes_fire_it,
            tokens_are_stored_listed_and_revoked_by_id_or_name,
            a_live_token_name_is_taken_until_revoked,
            a_worker_remembers_the_token_that_registered_it,
            a_worker_cannot_report_or_extend_a_lease_another_worker_holds,
            the_audit_log_keeps_entries_in_order_until_pruned,
            an_idempotency_key_reused_for_a_different_task_is_refused,
            retrying_a_failed_workflow_reruns_what_failed_and_what_it_cancelled_and_keeps_what_succeeded,
            only_a_decided_workflow_can_be_retried,
            a_cancelled_workflow_is_retried_once_however_many_ask_at_once,
            a_lost_quorum_fan_out_reruns_its_failed_children_then_its_join,
            a_quorum_its_kept_children_still_reach_reruns_only_its_join,
            every_state_change_appends_its_event_in_order,
            a_refused_change_appends_no_event,
            a_workflow_appends_its_start_its_tasks_and_its_decision,
            events_past_retention_are_pruned_and_ids_are_never_reused,
            concurrent_changes_are_each_read_once_in_id_order,
            what_the_roll_up_reads_adds_up_as_the_events_do_from_anywhere,
            stats_add_up_by_minute_and_queue_and_each_stretch_is_added_once,
            task_logs_ride_on_the_current_leases_heartbeats_and_reports,
            an_attempts_log_is_capped_and_goes_with_its_task,
            webhooks_are_kept_moved_only_from_where_they_stand_and_deleted_with_their_log
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // A backend that cannot run here (no database reachable) yields `None` and the
                // case passes having said why on stderr.
                let harness: Option<$crate::conformance::Harness> = $make.await.into();
                let Some(harness) = harness else { return };
                $crate::conformance::$case(harness.store.as_ref()).await;
            }
        )*
    };
}

mod access;
mod events;
mod scheduling;
mod task_logs;
mod webhooks;
mod workflow_retry;
pub use access::*;
pub use events::*;
pub use scheduling::*;
pub use task_logs::*;
pub use webhooks::*;
pub use workflow_retry::*;

const T0: i64 = 1_800_000_000_000;

/// A point in the suite's virtual time, `ms` milliseconds after its start.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn spec(queue: &str) -> NewTask {
    let backoff =
        Backoff { min: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0, jitter: 0.0 };
    let limits =
        Limits { default_backoff: backoff, default_lease_timeout: Duration::from_secs(1), ..Limits::default() };
    SubmitTask { queue: queue.into(), kind: "echo".into(), payload: Some(raw(r#"{"n":1}"#)), ..Default::default() }
        .validate(&limits, at(0))
        .unwrap()
}

async fn submit(store: &dyn Store, tasks: Vec<NewTask>, now: Timestamp) -> Vec<Task> {
    let p = SubmitTasks { tasks, idempotency_window: Duration::from_secs(60), now };
    store.submit(p).await.unwrap().into_iter().map(|s| s.task).collect()
}

async fn submit_one(store: &dyn Store, spec: NewTask, now: Timestamp) -> Task {
    submit(store, vec![spec], now).await.remove(0)
}

async fn fetch(store: &dyn Store, queues: &[&str], limit: u32, now: Timestamp) -> Vec<Task> {
    let queues = queues.iter().map(|q| q.to_string()).collect();
    store
        .fetch(FetchTasks { worker_id: "w1".into(), queues, limit, wait: Duration::ZERO, now, finished: vec![] })
        .await
        .unwrap()
}

async fn report(store: &dyn Store, task: &Task, outcome: Outcome, now: Timestamp) -> crate::Result<Task> {
    let lease = task.lease.as_ref().expect("a leased task").token;
    let r = Report::new(task.id, lease, outcome);
    store.report(ReportOutcomes { worker_id: None, reports: vec![r], now }).await.unwrap().remove(0)
}

fn success(json: &str) -> Outcome {
    Outcome::Succeeded { result: raw(json) }
}

pub async fn submitted_task_can_be_read_back(store: &dyn Store) {
    let mut s = spec("default");
    s.tags = vec!["a".into(), "b".into()];
    s.priority = 7;
    let t = submit_one(store, s, at(0)).await;
    assert_eq!(t.state, TaskState::Ready);
    let got = store.get(t.id).await.unwrap();
    assert_eq!(got.id, t.id);
    assert_eq!(got.queue, "default");
    assert_eq!(got.kind, "echo");
    assert_eq!(got.payload.get(), r#"{"n":1}"#);
    assert_eq!(got.priority, 7);
    assert_eq!(got.tags, vec!["a", "b"]);
    assert_eq!(got.attempts, 0);
    assert_eq!(got.created_at, at(0));
    assert!(got.history.is_empty());
    let missing = taskwarden_core::IdGenerator::new().next(at(5), 1);
    assert!(matches!(store.get(missing).await, Err(StoreError::NotFound)));
}

/// The trace context a task was submitted in is kept through every state it passes.
pub async fn a_task_keeps_its_traceparent(store: &dyn Store) {
    let parent: taskwarden_core::TraceParent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
    let traced = submit_one(store, NewTask { traceparent: Some(parent), ..spec("traced") }, at(0)).await;
    let plain = submit_one(store, spec("traced"), at(1)).await;
    assert_eq!(store.get(traced.id).await.unwrap().traceparent, Some(parent));
    assert_eq!(store.get(plain.id).await.unwrap().traceparent, None);
    let leased = fetch(store, &["traced"], 10, at(2)).await;
    let find = |id| leased.iter().find(|t| t.id == id).expect("leased");
    assert_eq!(find(traced.id).traceparent, Some(parent));
    assert_eq!(find(plain.id).traceparent, None);
    let done = report(store, find(traced.id), success("1"), at(3)).await.unwrap();
    assert_eq!(done.traceparent, Some(parent));
    assert_eq!(store.get(traced.id).await.unwrap().traceparent, Some(parent));
}

pub async fn delayed_task_is_scheduled_until_promoted(store: &dyn Store) {
    let mut s = spec("default");
    s.delay = Duration::from_secs(10);
    let t = submit_one(store, s, at(0)).await;
    assert_eq!(t.state, TaskState::Scheduled);
    assert!(fetch(store, &["default"], 10, at(20_000)).await.is_empty(), "scheduled tasks are not leased");
    let early = store.promote_due(PromoteDue { now: at(5_000), limit: 100 }).await.unwrap();
    assert_eq!(early.promoted, 0);
    assert_eq!(early.next_due, Some(at(10_000)));
    let due = store.promote_due(PromoteDue { now: at(10_000), limit: 100 }).await.unwrap();
    assert_eq!(due.promoted, 1);
    assert_eq!(due.next_due, None);
    assert_eq!(fetch(store, &["default"], 10, at(10_001)).await.len(), 1);
}

/// A task not started by its `expires_at` is dropped as `expired`: by the sweep while it is ready
/// or scheduled, or by a fetch that reaches it first; it is never leased. Retried by hand, it
/// runs after all.
pub async fn a_task_not_started_by_its_expires_at_expires(store: &dyn Store) {
    let expiring = |ms| NewTask { expires_at: Some(at(ms)), ..spec("x") };
    let ready = submit_one(store, expiring(100), at(0)).await;
    let scheduled = submit_one(store, NewTask { delay: Duration::from_millis(50), ..expiring(100) }, at(0)).await;
    let later = submit_one(store, expiring(1_000), at(0)).await;
    assert_eq!((ready.expires_at, scheduled.state), (Some(at(100)), TaskState::Scheduled));
    let sweep = |now| store.expire_unstarted(ExpireLeases { now: at(now), limit: 100 });
    assert_eq!(sweep(99).await.unwrap(), 0, "nothing before its time");

    // The fetch reaches the expired one before any sweep did: it drops it and leases the other.
    let got = fetch(store, &["x"], 10, at(150)).await;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![later.id], "an expired task is never leased");
    let dropped = store.get(ready.id).await.unwrap();
    assert_eq!((dropped.state, dropped.attempts, dropped.finished_at), (TaskState::Expired, 0, Some(at(150))));
    assert!(dropped.error.as_deref().unwrap_or_default().starts_with("expired"), "{:?}", dropped.error);
    assert_eq!(sweep(150).await.unwrap(), 1, "the scheduled one, never promoted");
    assert_eq!(store.get(scheduled.id).await.unwrap().state, TaskState::Expired);
    assert_eq!(sweep(2_000).await.unwrap(), 0, "a started task does not expire");

    let revived = store.retry(RetryTask { id: ready.id, now: at(3_000) }).await.unwrap();
    assert_eq!((revived.state, revived.expires_at), (TaskState::Ready, None));
    assert_eq!(sweep(3_001).await.unwrap(), 0);
    let got = fetch(store, &["x"], 10, at(3_002)).await;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ready.id], "runs after all");
}

pub async fn batch_returns_tasks_in_request_order(store: &dyn Store) {
    let specs: Vec<NewTask> = (0..50).map(|i| NewTask { priority: i, ..spec("batch") }).collect();
    let tasks = submit(store, specs, at(0)).await;
    assert_eq!(tasks.len(), 50);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.priority, i as i32);
    }
    assert!(tasks.windows(2).all(|w| w[0].id < w[1].id), "ids follow submission order");
}

pub async fn idempotency_key_returns_the_first_task_within_the_window(store: &dyn Store) {
    let keyed = || NewTask { idempotency_key: Some("order-42".into()), ..spec("default") };
    let p = |now| SubmitTasks { tasks: vec![keyed()], idempotency_window: Duration::from_secs(60), now };
    let first = store.submit(p(at(0))).await.unwrap().remove(0);
    assert!(first.created);
    let again = store.submit(p(at(1_000))).await.unwrap().remove(0);
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    let later = store.submit(p(at(61_000))).await.unwrap().remove(0);
    assert!(later.created, "the key expired with its window");
    assert_ne!(later.task.id, first.task.id);
}

pub async fn fetch_takes_highest_priority_first_then_oldest(store: &dyn Store) {
    let low = submit_one(store, NewTask { priority: 0, ..spec("q") }, at(0)).await;
    let high1 = submit_one(store, NewTask { priority: 5, ..spec("q") }, at(1)).await;
    let high2 = submit_one(store, NewTask { priority: 5, ..spec("q") }, at(2)).await;
    let got: Vec<_> = fetch(store, &["q"], 3, at(3)).await.into_iter().map(|t| t.id).collect();
    assert_eq!(got, vec![high1.id, high2.id, low.id]);
}

pub async fn fetch_serves_only_the_named_queues_up_to_the_limit(store: &dyn Store) {
    submit(store, (0..5).map(|_| spec("a")).collect(), at(0)).await;
    submit(store, (0..5).map(|_| spec("b")).collect(), at(0)).await;
    submit(store, (0..5).map(|_| spec("c")).collect(), at(0)).await;
    let got = fetch(store, &["a", "b"], 7, at(1)).await;
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|t| t.queue != "c"));
    assert!(got.iter().all(|t| t.state == TaskState::Running && t.attempts == 1));
    let rest = fetch(store, &["a", "b"], 100, at(2)).await;
    assert_eq!(rest.len(), 3, "no task is leased twice");
}

pub async fn completion_with_the_current_lease_is_recorded_once(store: &dyn Store) {
    submit_one(store, spec("q"), at(0)).await;
    let leased = fetch(store, &["q"], 1, at(10)).await.remove(0);
    let done = report(store, &leased, success(r#"{"ok":true}"#), at(30)).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    let again = report(store, &leased, success(r#"{"ok":false}"#), at(40)).await;
    assert!(matches!(again, Err(StoreError::LeaseLost)), "a second completion is refused");
    let got = store.get(leased.id).await.unwrap();
    assert_eq!(got.result.unwrap().get(), r#"{"ok":true}"#);
    assert_eq!(got.finished_at, Some(at(30)));
    assert_eq!(got.history.len(), 1);
    assert_eq!(got.history[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(got.history[0].run_time(), Duration::from_millis(20));
}

pub async fn expired_lease_is_reassigned_and_stale_completion_is_rejected(store: &dyn Store) {
    submit_one(store, spec("q"), at(0)).await;
    let first = fetch(store, &["q"], 1, at(0)).await.remove(0);
    assert_eq!(store.expire_leases(ExpireLeases { now: at(500), limit: 100 }).await.unwrap(), 0);
    assert_eq!(store.expire_leases(ExpireLeases { now: at(1_000), limit: 100 }).await.unwrap(), 1);
    let after = store.get(first.id).await.unwrap();
    assert_eq!(after.state, TaskState::Scheduled, "a timed-out attempt is retried with backoff");
    assert_eq!(after.history[0].outcome, AttemptOutcome::TimedOut);
    store.promote_due(PromoteDue { now: at(1_100), limit: 100 }).await.unwrap();
    let second = fetch(store, &["q"], 1, at(1_100)).await.remove(0);
    assert_eq!(second.attempts, 2);
    assert!(matches!(report(store, &first, success("1"), at(1_200)).await, Err(StoreError::LeaseLost)));
    report(store, &second, success("2"), at(1_300)).await.unwrap();
    let got = store.get(first.id).await.unwrap();
    assert_eq!(got.state, TaskState::Succeeded);
    assert_eq!(got.result.unwrap().get(), "2", "the stored result is the second worker's");
}

pub async fn failure_retries_with_backoff_then_dead_letters(store: &dyn Store) {
    let t = submit_one(store, NewTask { max_attempts: 2, ..spec("q") }, at(0)).await;
    let a1 = fetch(store, &["q"], 1, at(0)).await.remove(0);
    let fail = || Outcome::Failed { error: "boom".into(), retry_after_ms: None, permanent: false };
    let after1 = report(store, &a1, fail(), at(10)).await.unwrap();
    assert_eq!(after1.state, TaskState::Scheduled);
    assert_eq!(after1.run_at, at(110), "first retry waits the backoff minimum");
    store.promote_due(PromoteDue { now: at(110), limit: 10 }).await.unwrap();
    let a2 = fetch(store, &["q"], 1, at(110)).await.remove(0);
    let after2 = report(store, &a2, fail(), at(120)).await.unwrap();
    assert_eq!(after2.state, TaskState::Failed);
    let got = store.get(t.id).await.unwrap();
    assert_eq!(got.error.as_deref(), Some("boom"));
    assert_eq!(got.history.len(), 2);

    let p = submit_one(store, spec("p"), at(200)).await;
    let leased = fetch(store, &["p"], 1, at(200)).await.remove(0);
    let permanent = Outcome::Failed { error: "bad input".into(), retry_after_ms: None, permanent: true };
    assert_eq!(report(store, &leased, permanent, at(210)).await.unwrap().state, TaskState::Failed);
    assert_eq!(store.get(p.id).await.unwrap().attempts, 1);
}

pub async fn heartbeat_extends_the_lease_and_carries_cancellation(store: &dyn Store) {
    submit_one(store, spec("q"), at(0)).await;
    let leased = fetch(store, &["q"], 1, at(0)).await.remove(0);
    let lease = leased.lease.as_ref().unwrap().token;
    let held = || vec![HeldLease { task_id: leased.id, lease, progress: None, logs: Vec::new() }];
    let beat = store.heartbeat(Heartbeat { worker_id: Some("w1".into()), leases: held(), now: at(800) }).await.unwrap();
    assert_eq!(beat[0].status, ItemStatus::Ok);
    assert_eq!(beat[0].lease_expires_at, Some(at(1_800)));
    assert_eq!(store.expire_leases(ExpireLeases { now: at(1_500), limit: 10 }).await.unwrap(), 0);

    let c = store.cancel(CancelTask { id: leased.id, now: at(900) }).await.unwrap();
    assert_eq!(c.effect, Cancellation::Requested);
    let beat =
        store.heartbeat(Heartbeat { worker_id: Some("w1".into()), leases: held(), now: at(1_000) }).await.unwrap();
    assert!(beat[0].cancel_requested);
    let done = report(store, &leased, Outcome::Cancelled, at(1_100)).await.unwrap();
    assert_eq!(done.state, TaskState::Cancelled);

    let stale =
        store.heartbeat(Heartbeat { worker_id: Some("w1".into()), leases: held(), now: at(1_200) }).await.unwrap();
    assert_eq!(stale[0].status, ItemStatus::LeaseLost);
}

pub async fn cancel_stops_a_waiting_task_at_once(store: &dyn Store) {
    let t = submit_one(store, spec("q"), at(0)).await;
    let c = store.cancel(CancelTask { id: t.id, now: at(1) }).await.unwrap();
    assert_eq!(c.effect, Cancellation::Cancelled);
    assert_eq!(c.task.state, TaskState::Cancelled);
    assert!(fetch(store, &["q"], 10, at(2)).await.is_empty());
    assert!(matches!(store.cancel(CancelTask { id: t.id, now: at(3) }).await, Err(StoreError::Transition(_))));
}

pub async fn manual_retry_revives_a_dead_letter(store: &dyn Store) {
    let t = submit_one(store, NewTask { max_attempts: 1, ..spec("q") }, at(0)).await;
    assert!(matches!(store.retry(RetryTask { id: t.id, now: at(1) }).await, Err(StoreError::Transition(_))));
    let leased = fetch(store, &["q"], 1, at(1)).await.remove(0);
    report(store, &leased, Outcome::Failed { error: "x".into(), retry_after_ms: None, permanent: false }, at(2))
        .await
        .unwrap();
    let revived = store.retry(RetryTask { id: t.id, now: at(3) }).await.unwrap();
    assert_eq!(revived.state, TaskState::Ready);
    let again = fetch(store, &["q"], 1, at(4)).await.remove(0);
    assert_eq!(again.attempts, 2);
}

pub async fn released_task_is_ready_again(store: &dyn Store) {
    let t = submit_one(store, NewTask { max_attempts: 1, ..spec("q") }, at(0)).await;
    let leased = fetch(store, &["q"], 1, at(1)).await.remove(0);
    assert_eq!(report(store, &leased, Outcome::Released, at(2)).await.unwrap().state, TaskState::Ready);
    let again = fetch(store, &["q"], 1, at(3)).await.remove(0);
    assert_eq!(again.id, t.id);
    report(store, &again, success("null"), at(4)).await.unwrap();
    assert_eq!(store.get(t.id).await.unwrap().history[0].outcome, AttemptOutcome::Released);
}

pub async fn list_filters_and_paginates_newest_first(store: &dyn Store) {
    for i in 0..25 {
        let mut s = spec(if i % 2 == 0 { "even" } else { "odd" });
        if i % 5 == 0 {
            s.tags = vec!["fifth".into()];
            s.kind = "special".into();
        }
        submit_one(store, s, at(i)).await;
    }
    let all = |before| ListTasks { before, limit: 10, ..Default::default() };
    let p1 = store.list(all(None)).await.unwrap();
    assert_eq!(p1.tasks.len(), 10);
    assert!(p1.tasks.windows(2).all(|w| w[0].id > w[1].id));
    let p2 = store.list(all(p1.next)).await.unwrap();
    let p3 = store.list(all(p2.next)).await.unwrap();
    assert_eq!(p3.tasks.len(), 5);
    assert_eq!(p3.next, None);
    let q = |f: ListTasks| async move { store.list(f).await.unwrap().tasks.len() };
    let by = |filter: TaskSearch| ListTasks { filter, limit: 100, ..Default::default() };
    assert_eq!(q(by(TaskSearch { queue: Some("even".into()), ..Default::default() })).await, 13);
    assert_eq!(q(by(TaskSearch { tag: Some("fifth".into()), ..Default::default() })).await, 5);
    assert_eq!(q(by(TaskSearch { kind: Some("special".into()), ..Default::default() })).await, 5);
    assert_eq!(q(by(TaskSearch { state: Some(TaskState::Ready), ..Default::default() })).await, 25);
    assert_eq!(q(by(TaskSearch { state: Some(TaskState::Running), ..Default::default() })).await, 0);
}

/// The search language's terms, answered by the store: JSON fields of payloads and results,
/// error text, workers, creation times, ids; and a window that bounds each page's scan while
/// its cursor loses no match.
pub async fn search_finds_tasks_by_fields_errors_times_and_windows(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..30 {
        let payload = format!(
            r#"{{"customer":{{"id":{}}},"plan":"{}","vip":{}}}"#,
            i % 3,
            if i % 2 == 0 { "pro" } else { "free" },
            i == 7
        );
        let s = NewTask { payload: raw(&payload), max_attempts: 1, ..spec("search") };
        ids.push(submit_one(store, s, at(i * 1000)).await.id);
    }
    // Three more in another queue are leased: one fails with a message, one succeeds with a
    // result, one runs on.
    for i in 0..3 {
        let s = NewTask { payload: raw(r#"{"customer":{"id":99}}"#), max_attempts: 1, ..spec("search-run") };
        submit_one(store, s, at(35_000 + i)).await;
    }
    let leased = fetch(store, &["search-run"], 3, at(40_000)).await;
    assert_eq!(leased.len(), 3);
    let worker = leased[0].lease.as_ref().unwrap().worker_id.clone();
    report(
        store,
        &leased[0],
        Outcome::Failed { error: "Upstream TIMED OUT after 5%".into(), retry_after_ms: None, permanent: true },
        at(41_000),
    )
    .await
    .unwrap();
    report(store, &leased[1], success(r#"{"total":12.5,"ok":true}"#), at(41_000)).await.unwrap();
    let now = at(50_000);
    let find = |q: &str, window: Option<u32>, before: Option<TaskId>| {
        let filter = TaskSearch::parse(q, now).unwrap();
        async move { store.list(ListTasks { filter, before, limit: 100, window }).await.unwrap() }
    };
    let count = |q: &'static str| async move { find(q, None, None).await.tasks.len() };
    assert_eq!(count("payload.customer.id=1").await, 10);
    assert_eq!(count("payload.customer.id:1 payload.plan:pro").await, 5);
    assert_eq!(count(r#"payload.customer.id:"1""#).await, 0, "the text \"1\" is not the number 1");
    assert_eq!(count("payload.vip:true").await, 1);
    assert_eq!(count("payload.missing:1").await, 0);
    assert_eq!(count("result.ok:true").await, 1);
    assert_eq!(count("result.total=12.5").await, 1);
    assert_eq!(count("error:\"timed out\"").await, 1, "error text matches in any case");
    assert_eq!(count("error:5%").await, 1);
    assert_eq!(count("error:5%x").await, 0, "% is a character, not a wildcard");
    let running = find(&format!("worker:{worker}"), None, None).await.tasks;
    assert_eq!(running.iter().map(|t| t.id).collect::<Vec<_>>(), vec![leased[2].id], "the task it runs");
    assert_eq!(count("worker:nobody").await, 0);
    let first = find(&ids[3].to_string(), None, None).await.tasks;
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[3]]);
    // Created at(10s) to at(20s): tasks 10 to 19.
    let range = format!("after:{} before:{}", at(10_000), at(20_000));
    let got = find(&range, None, None).await.tasks;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), ids[10..20].iter().rev().copied().collect::<Vec<_>>());
    // A window of 4 rows per page: pages come out short, but following the cursor finds every
    // match, newest first, and stops.
    let (mut found, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = find("payload.customer.id=1", Some(4), cursor).await;
        assert!(page.tasks.len() <= 4);
        found.extend(page.tasks.iter().map(|t| t.id));
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let want: Vec<TaskId> = ids.iter().enumerate().rev().filter(|(i, _)| i % 3 == 1).map(|(_, id)| *id).collect();
    assert_eq!(found, want);
    assert!((8..=10).contains(&pages), "33 rows in windows of 4: {pages} pages");
    // Without terms that look into rows the window does not apply.
    assert_eq!(find("queue:search", Some(4), None).await.tasks.len(), 30);
}

pub async fn topics_announce_ready_and_finished_tasks(store: &dyn Store) {
    let mut ready = store.subscribe(Topic::Ready);
    let mut finished = store.subscribe(Topic::Finished);
    ready.borrow_and_update();
    finished.borrow_and_update();
    submit_one(store, spec("q"), at(0)).await;
    assert!(ready.has_changed().unwrap(), "a ready submit wakes fetchers");
    let leased = fetch(store, &["q"], 1, at(1)).await.remove(0);
    assert!(!finished.has_changed().unwrap());
    report(store, &leased, success("1"), at(2)).await.unwrap();
    assert!(finished.has_changed().unwrap(), "a completion wakes waiters");
}

pub async fn workers_are_listed_with_their_running_tasks(store: &dyn Store) {
    let w = store
        .register_worker(RegisterWorker {
            name: "host-1".into(),
            owner: None,
            queues: vec!["q".into()],
            concurrency: 4,
            capacity: Default::default(),
            labels: Default::default(),
            kinds: Vec::new(),
            schemas: Default::default(),
            now: at(0),
        })
        .await
        .unwrap();
    submit(store, vec![spec("q"), spec("q")], at(0)).await;
    let queues = vec!["q".to_string()];
    store
        .fetch(FetchTasks {
            worker_id: w.id.clone(),
            queues,
            limit: 2,
            wait: Duration::ZERO,
            now: at(1),
            finished: vec![],
        })
        .await
        .unwrap();
    let listed = store.list_workers().await.unwrap();
    let me = listed.iter().find(|x| x.id == w.id).expect("registered worker is listed");
    assert_eq!(me.name, "host-1");
    assert_eq!(me.running, 2);
}

pub async fn concurrent_submits_are_all_stored(store: &dyn Store) {
    // Shared through an Arc-free scope: each future borrows the store.
    let futures =
        (0..64).map(|i| async move { submit_one(store, NewTask { priority: i % 3, ..spec("c") }, at(i.into())).await });
    let tasks = futures_join(futures.collect()).await;
    let mut ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    let leased = fetch(store, &["c"], 1000, at(100)).await;
    assert_eq!(leased.len(), 64);
}

/// Polls a set of futures to completion concurrently (a tiny join_all, to avoid a dependency).
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("polled to completion")).collect()
}

pub async fn a_waiting_fetch_is_handed_a_task_submitted_later(store: &dyn Store) {
    let p = FetchTasks {
        worker_id: "w1".into(),
        queues: vec!["later".into()],
        limit: 5,
        wait: Duration::from_secs(10),
        now: at(0),
        finished: vec![],
    };
    let waiting = store.fetch(p);
    let submit = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        submit_one(store, spec("later"), at(1)).await
    };
    let started = std::time::Instant::now();
    let (leased, submitted) = tokio::join!(waiting, submit);
    let leased = leased.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, submitted.id);
    assert_eq!(leased[0].state, TaskState::Running);
    assert!(started.elapsed() < Duration::from_secs(5), "answered on the submit, not at the end of the wait");
}

pub async fn a_fetch_that_stopped_waiting_takes_nothing(store: &dyn Store) {
    let p = FetchTasks {
        worker_id: "gone".into(),
        queues: vec!["q".into()],
        limit: 5,
        wait: Duration::from_millis(20),
        now: at(0),
        finished: vec![],
    };
    assert!(store.fetch(p).await.unwrap().is_empty());
    let t = submit_one(store, spec("q"), at(1)).await;
    let got = fetch(store, &["q"], 5, at(2)).await;
    assert_eq!(got.len(), 1, "the task went to the live fetch, not the one that gave up");
    assert_eq!(got[0].id, t.id);
    assert_eq!(got[0].attempts, 1);
}

pub async fn expired_idempotency_keys_are_pruned(store: &dyn Store) {
    for (i, t) in [0, 10_000].into_iter().enumerate() {
        submit_one(store, NewTask { idempotency_key: Some(format!("k{i}")), ..spec("q") }, at(t)).await;
    }
    let pruned =
        store.prune_expired(PruneExpired { keys_before: at(5_000), workers_before: at(0), limit: 100 }).await.unwrap();
    assert_eq!(pruned, 1, "only the key created before the cut-off goes");
    let again =
        store.prune_expired(PruneExpired { keys_before: at(5_000), workers_before: at(0), limit: 100 }).await.unwrap();
    assert_eq!(again, 0);
    let p = SubmitTasks {
        tasks: vec![NewTask { idempotency_key: Some("k1".into()), ..spec("q") }],
        idempotency_window: Duration::from_secs(3600),
        now: at(11_000),
    };
    assert!(!store.submit(p).await.unwrap().remove(0).created, "the younger key still deduplicates");
}

fn workflow(policy: taskwarden_core::workflow::FailurePolicy, nodes: &[(&str, &[&str])]) -> SubmitWorkflow {
    use taskwarden_core::workflow::{NodeSpec, WorkflowSpec};
    let tasks = nodes
        .iter()
        .map(|(id, deps)| NodeSpec {
            id: id.to_string(),
            kind: "echo".into(),
            queue: "wf".into(),
            payload: Some(raw(&format!("\"{id}\""))),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            max_attempts: Some(1),
            ..Default::default()
        })
        .collect();
    let plan = WorkflowSpec { name: Some("test".into()), failure_policy: policy, tasks, traceparent: None }
        .plan(&Limits::default(), at(0))
        .unwrap();
    SubmitWorkflow { plan, now: at(0) }
}

/// Leases every ready workflow task, returning them by node id.
async fn lease_ready(store: &dyn Store, now: Timestamp) -> std::collections::BTreeMap<String, Task> {
    fetch(store, &["wf"], 100, now).await.into_iter().map(|t| (t.node.clone().unwrap(), t)).collect()
}

fn failure(permanent: bool) -> Outcome {
    Outcome::Failed { error: "boom".into(), retry_after_ms: None, permanent }
}

pub async fn a_workflow_runs_in_dependency_order_and_returns_its_sinks_result(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let wf = store
        .submit_workflow(workflow(
            FailurePolicy::FailFast,
            &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
        ))
        .await
        .unwrap();
    assert_eq!(wf.total, 4);
    let ready = lease_ready(store, at(1)).await;
    assert_eq!(ready.keys().collect::<Vec<_>>(), vec!["a"], "only the root is ready");
    report(store, &ready["a"], success(r#"{"from":"a"}"#), at(2)).await.unwrap();
    let ready = lease_ready(store, at(3)).await;
    assert_eq!(ready.keys().collect::<Vec<_>>(), vec!["b", "c"]);
    report(store, &ready["b"], success("1"), at(4)).await.unwrap();
    assert!(lease_ready(store, at(5)).await.is_empty(), "d waits for c too");
    report(store, &ready["c"], success("2"), at(6)).await.unwrap();
    let ready = lease_ready(store, at(7)).await;
    let d = &ready["d"];
    assert_eq!(d.parent_count, 2);
    let parents = store.parents(ListParents { task_id: d.id, after: None, limit: 10 }).await.unwrap();
    let seen: Vec<(&str, &str)> = parents.iter().map(|p| (p.node.as_str(), p.result.as_ref().unwrap().get())).collect();
    assert_eq!(seen, vec![("b", "1"), ("c", "2")], "the child reads its parents' results in node order");
    let page = store.parents(ListParents { task_id: d.id, after: Some("b".into()), limit: 10 }).await.unwrap();
    assert_eq!(page.len(), 1);
    let ghost = taskwarden_core::IdGenerator::new().next(at(0), 9);
    assert!(matches!(
        store.parents(ListParents { task_id: ghost, after: None, limit: 10 }).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_workflow(wf.id).await.unwrap().state, WorkflowState::Running);
    report(store, d, success(r#"{"sum":3}"#), at(10)).await.unwrap();
    let done = store.get_workflow(wf.id).await.unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded);
    assert_eq!(done.result.unwrap().get(), r#"{"sum":3}"#);
    assert_eq!((done.succeeded, done.failed), (4, 0));
    let report = done.speedup.unwrap();
    assert_eq!(report.tasks, 4);
    assert_eq!(report.peak_parallelism, 2);
    assert_eq!(report.t_serial, Duration::from_millis(1 + 1 + 3 + 3));
}

pub async fn fail_fast_cancels_what_has_not_finished(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let wf = store
        .submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"]), ("c", &[])]))
        .await
        .unwrap();
    let ready = lease_ready(store, at(1)).await;
    report(store, &ready["a"], failure(true), at(2)).await.unwrap();
    let got = store.get_workflow(wf.id).await.unwrap();
    assert_eq!(got.state, WorkflowState::Failed);
    assert!(got.error.as_deref().unwrap().contains("task a"), "{:?}", got.error);
    let state = |n: &str| got.nodes.iter().find(|x| x.node == n).unwrap().state;
    assert_eq!(state("b"), TaskState::Cancelled, "never started");
    assert_eq!(state("c"), TaskState::Running, "running: asked to stop");
    assert!(store.get(ready["c"].id).await.unwrap().cancel_requested);
}

pub async fn collect_runs_the_children_of_failed_parents(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let wf = store
        .submit_workflow(workflow(FailurePolicy::Collect, &[("a", &[]), ("b", &[]), ("join", &["a", "b"])]))
        .await
        .unwrap();
    let ready = lease_ready(store, at(1)).await;
    report(store, &ready["a"], failure(true), at(2)).await.unwrap();
    report(store, &ready["b"], success("\"ok\""), at(3)).await.unwrap();
    let join = lease_ready(store, at(4)).await.remove("join").expect("the join runs despite a failed parent");
    let parents = store.parents(ListParents { task_id: join.id, after: None, limit: 10 }).await.unwrap();
    assert_eq!(parents[0].state, TaskState::Failed);
    assert_eq!(parents[0].error.as_deref(), Some("boom"));
    assert_eq!(parents[1].result.as_ref().unwrap().get(), "\"ok\"");
    report(store, &join, success("\"joined\""), at(5)).await.unwrap();
    let got = store.get_workflow(wf.id).await.unwrap();
    assert_eq!(got.state, WorkflowState::Succeeded);
    assert_eq!((got.succeeded, got.failed), (2, 1));
}

pub async fn a_quorum_decides_as_soon_as_enough_tasks_succeeded(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let nodes: Vec<(String, Vec<&str>)> = (0..5).map(|i| (format!("n{i}"), vec![])).collect();
    let nodes: Vec<(&str, &[&str])> = nodes.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let policy = FailurePolicy::Quorum { min_successes: Some(3), fraction: None };
    let wf = store.submit_workflow(workflow(policy, &nodes)).await.unwrap();
    let ready = lease_ready(store, at(1)).await;
    report(store, &ready["n0"], failure(true), at(2)).await.unwrap();
    for n in ["n1", "n2"] {
        report(store, &ready[n], success("1"), at(3)).await.unwrap();
    }
    assert_eq!(store.get_workflow(wf.id).await.unwrap().state, WorkflowState::Running);
    report(store, &ready["n3"], success("1"), at(4)).await.unwrap();
    let got = store.get_workflow(wf.id).await.unwrap();
    assert_eq!(got.state, WorkflowState::Succeeded, "3 of 5 succeeded");
    assert!(store.get(ready["n4"].id).await.unwrap().cancel_requested, "the rest is cancelled once decided");
}

pub async fn cancelling_a_workflow_cancels_its_unfinished_tasks(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"])])).await.unwrap();
    let a = lease_ready(store, at(1)).await.remove("a").unwrap();
    assert!(matches!(store.retry(RetryTask { id: a.id, now: at(1) }).await, Err(StoreError::Conflict(_))));
    let got = store.cancel_workflow(CancelWorkflow { id: wf.id, now: at(2) }).await.unwrap();
    assert_eq!(got.state, WorkflowState::Cancelled);
    assert_eq!(store.get(got.nodes[1].task_id).await.unwrap().state, TaskState::Cancelled);
    assert!(store.get(a.id).await.unwrap().cancel_requested);
    assert!(matches!(
        store.cancel_workflow(CancelWorkflow { id: wf.id, now: at(3) }).await,
        Err(StoreError::Conflict(_))
    ));
}

fn fan_out_plan(children: usize) -> taskwarden_core::workflow::FanOutPlan {
    fan_out_plan_with(children, None)
}

fn fan_out_plan_with(
    children: usize,
    policy: Option<taskwarden_core::workflow::FailurePolicy>,
) -> taskwarden_core::workflow::FanOutPlan {
    use taskwarden_core::workflow::{FanOutRequest, NodeSpec};
    let child = |i: usize| NodeSpec {
        kind: "echo".into(),
        queue: "wf".into(),
        payload: Some(raw(&i.to_string())),
        ..Default::default()
    };
    let req = FanOutRequest {
        lease: taskwarden_core::LeaseToken(0),
        children: (0..children).map(child).collect(),
        join: NodeSpec { kind: "echo".into(), queue: "wf".into(), ..Default::default() },
        failure_policy: policy,
        traceparent: None,
    };
    req.plan(&Limits::default(), at(0)).unwrap()
}

async fn fan_out(
    store: &dyn Store,
    task: &Task,
    children: usize,
    now: Timestamp,
) -> crate::Result<taskwarden_core::workflow::FanOut> {
    let lease = task.lease.as_ref().unwrap().token;
    store.fan_out(FanOutTasks { task_id: task.id, lease, plan: fan_out_plan(children), now }).await
}

pub async fn a_running_task_fans_out_and_its_join_gathers_in_child_order(store: &dyn Store) {
    use taskwarden_core::workflow::WorkflowState;
    submit_one(store, spec("wf"), at(0)).await;
    let parent = fetch(store, &["wf"], 1, at(1)).await.remove(0);
    let stale = Task {
        lease: Some(taskwarden_core::Lease { token: taskwarden_core::LeaseToken(7), ..parent.lease.clone().unwrap() }),
        ..parent.clone()
    };
    assert!(
        matches!(fan_out(store, &stale, 2, at(2)).await, Err(StoreError::LeaseLost)),
        "fenced like every worker call"
    );
    let fo = fan_out(store, &parent, 12, at(2)).await.unwrap();
    assert_eq!(fo.children, 12);
    let again = fan_out(store, &parent, 12, at(3)).await.unwrap();
    assert_eq!(again.join_id, fo.join_id, "fanning out again (a retried attempt) returns the same fan-out");
    report(store, &parent, success("\"parent done\""), at(4)).await.unwrap();
    let children = lease_ready(store, at(5)).await;
    assert_eq!(children.len(), 12, "the join is not among them: {:?}", children.keys());
    for (i, (_, child)) in children.iter().rev().enumerate() {
        if i == 11 {
            assert!(lease_ready(store, at(6)).await.is_empty(), "the join waits for the last child");
        }
        report(
            store,
            child,
            success(&format!("\"r{}\"", child.node.as_ref().unwrap().rsplit('/').next().unwrap())),
            at(6 + i as i64),
        )
        .await
        .unwrap();
    }
    let join =
        lease_ready(store, at(30)).await.remove("root/join").expect("the join is ready once every child finished");
    assert_eq!(join.parent_count, 12);
    let mut results = Vec::new();
    let mut after = None;
    loop {
        let page = store.parents(ListParents { task_id: join.id, after: after.clone(), limit: 5 }).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.node.clone());
        results.extend(page.into_iter().map(|p| p.result.unwrap().get().to_owned()));
    }
    let expected: Vec<String> = (0..12).map(|i| format!("\"r{i:06}\"")).collect();
    assert_eq!(results, expected, "child order, page by page");
    report(store, &join, success("\"gathered\""), at(31)).await.unwrap();
    let wf = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(wf.state, WorkflowState::Succeeded);
    assert_eq!(wf.total, 14);
    assert_eq!(wf.result.unwrap().get(), "\"gathered\"", "the join's result stands for the parent's");
}

pub async fn a_nested_fan_out_holds_the_outer_join_until_it_is_done(store: &dyn Store) {
    use taskwarden_core::workflow::WorkflowState;
    submit_one(store, spec("wf"), at(0)).await;
    let root = fetch(store, &["wf"], 1, at(1)).await.remove(0);
    let outer = fan_out(store, &root, 2, at(2)).await.unwrap();
    report(store, &root, success("0"), at(3)).await.unwrap();
    let kids = lease_ready(store, at(4)).await;
    let inner = fan_out(store, &kids["root/000000"], 2, at(5)).await.unwrap();
    assert_eq!(inner.workflow_id, outer.workflow_id, "a child's fan-out joins the same workflow");
    for k in kids.values() {
        report(store, k, success("1"), at(6)).await.unwrap();
    }
    let ready = lease_ready(store, at(7)).await;
    assert_eq!(
        ready.keys().collect::<Vec<_>>(),
        vec!["root/000000/000000", "root/000000/000001"],
        "the outer join still waits"
    );
    for g in ready.values() {
        report(store, g, success("2"), at(8)).await.unwrap();
    }
    let inner_join = lease_ready(store, at(9)).await.remove("root/000000/join").unwrap();
    report(store, &inner_join, success("\"inner\""), at(10)).await.unwrap();
    let outer_join = lease_ready(store, at(11)).await.remove("root/join").expect("released by the inner join");
    let parents = store.parents(ListParents { task_id: outer_join.id, after: None, limit: 10 }).await.unwrap();
    let nodes: Vec<&str> = parents.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, vec!["root/000000/join", "root/000001"], "the inner join took its parent's place");
    report(store, &outer_join, success("\"outer\""), at(12)).await.unwrap();
    let wf = store.get_workflow(outer.workflow_id).await.unwrap();
    assert_eq!((wf.state, wf.total, wf.succeeded), (WorkflowState::Succeeded, 7, 7));
    assert_eq!(wf.result.unwrap().get(), "\"outer\"");
}

pub async fn a_child_retried_after_its_lease_expired_counts_once(store: &dyn Store) {
    submit_one(store, spec("wf"), at(0)).await;
    let parent = fetch(store, &["wf"], 1, at(1)).await.remove(0);
    fan_out(store, &parent, 2, at(2)).await.unwrap();
    report(store, &parent, success("0"), at(3)).await.unwrap();
    let kids = lease_ready(store, at(4)).await;
    let first = &kids["root/000000"];
    report(store, &kids["root/000001"], success("\"b\""), at(5)).await.unwrap();
    // The first child's worker goes silent: its lease (the default 30 s) expires and the child is
    // retried after its backoff (at most 1 s).
    assert_eq!(store.expire_leases(ExpireLeases { now: at(31_000), limit: 10 }).await.unwrap(), 1);
    store.promote_due(PromoteDue { now: at(33_000), limit: 10 }).await.unwrap();
    let second = lease_ready(store, at(33_000)).await.remove("root/000000").expect("retried");
    assert!(lease_ready(store, at(33_001)).await.is_empty(), "the join waits: the retry is still running");
    assert!(matches!(report(store, first, success("\"late\""), at(33_100)).await, Err(StoreError::LeaseLost)));
    assert!(lease_ready(store, at(33_101)).await.is_empty(), "a refused late report releases nothing");
    report(store, &second, success("\"a\""), at(33_200)).await.unwrap();
    let join =
        lease_ready(store, at(33_300)).await.remove("root/join").expect("released exactly when the retry finished");
    let parents = store.parents(ListParents { task_id: join.id, after: None, limit: 10 }).await.unwrap();
    let results: Vec<&str> = parents.iter().map(|p| p.result.as_ref().unwrap().get()).collect();
    assert_eq!(results, vec!["\"a\"", "\"b\""], "each child once, the retried one with its second attempt's result");
}

/// Submits a plain task, leases it and fans it out with `policy`; returns the fan-out and the
/// leased children by node id.
async fn fanned_out(
    store: &dyn Store,
    children: usize,
    policy: taskwarden_core::workflow::FailurePolicy,
) -> (taskwarden_core::workflow::FanOut, std::collections::BTreeMap<String, Task>) {
    submit_one(store, spec("wf"), at(0)).await;
    let parent = fetch(store, &["wf"], 1, at(1)).await.remove(0);
    let lease = parent.lease.as_ref().unwrap().token;
    let plan = fan_out_plan_with(children, Some(policy));
    let fo = store.fan_out(FanOutTasks { task_id: parent.id, lease, plan, now: at(2) }).await.unwrap();
    report(store, &parent, success("0"), at(3)).await.unwrap();
    (fo, lease_ready(store, at(4)).await)
}

pub async fn a_quorum_fan_out_runs_its_join_early_and_cancels_the_rest(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let (fo, kids) = fanned_out(store, 5, FailurePolicy::Quorum { min_successes: Some(3), fraction: None }).await;
    report(store, &kids["root/000000"], failure(true), at(5)).await.unwrap();
    assert_eq!(
        store.get_workflow(fo.workflow_id).await.unwrap().state,
        WorkflowState::Running,
        "one failure is within the quorum"
    );
    for n in ["root/000001", "root/000002"] {
        report(store, &kids[n], success("1"), at(6)).await.unwrap();
    }
    assert!(lease_ready(store, at(7)).await.is_empty(), "2 of the 3 needed");
    report(store, &kids["root/000003"], success("1"), at(8)).await.unwrap();
    let join = lease_ready(store, at(9)).await.remove("root/join").expect("the join runs as soon as 3 succeeded");
    assert!(store.get(kids["root/000004"].id).await.unwrap().cancel_requested, "the last child is no longer needed");
    report(store, &join, success("\"quorum\""), at(10)).await.unwrap();
    report(store, &kids["root/000004"], Outcome::Cancelled, at(11)).await.unwrap();
    let wf = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(wf.state, WorkflowState::Succeeded, "{:?}", wf.error);
    assert_eq!(wf.result.unwrap().get(), "\"quorum\"");
}

pub async fn a_collecting_fan_out_hands_failures_to_its_join(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let (fo, kids) = fanned_out(store, 2, FailurePolicy::Collect).await;
    report(store, &kids["root/000000"], failure(true), at(5)).await.unwrap();
    report(store, &kids["root/000001"], success("1"), at(6)).await.unwrap();
    let join = lease_ready(store, at(7)).await.remove("root/join").expect("the join runs despite the failure");
    let parents = store.parents(ListParents { task_id: join.id, after: None, limit: 10 }).await.unwrap();
    assert_eq!(parents[0].state, TaskState::Failed);
    report(store, &join, success("\"collected\""), at(8)).await.unwrap();
    let wf = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(wf.state, WorkflowState::Succeeded, "the fan-out dealt with its failure: {:?}", wf.error);
}

pub async fn a_fail_fast_fan_out_cancels_its_join_and_fails_the_workflow(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let (fo, kids) = fanned_out(store, 3, FailurePolicy::FailFast).await;
    report(store, &kids["root/000000"], failure(true), at(5)).await.unwrap();
    assert_eq!(store.get(fo.join_id).await.unwrap().state, TaskState::Cancelled);
    assert!(store.get(kids["root/000001"].id).await.unwrap().cancel_requested);
    let wf = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(wf.state, WorkflowState::Failed);
}

pub async fn finished_work_past_retention_is_pruned(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let keyed = NewTask { idempotency_key: Some("once".into()), ..spec("r") };
    let done = submit(store, vec![keyed.clone(), spec("r")], at(0)).await;
    let waiting = submit_one(store, spec("other"), at(0)).await;
    for t in fetch(store, &["r"], 10, at(1)).await {
        report(store, &t, success("1"), at(1_000)).await.unwrap();
    }
    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"])])).await.unwrap();
    for now in [2_000, 3_000] {
        for t in lease_ready(store, at(now)).await.into_values() {
            report(store, &t, success("2"), at(now)).await.unwrap();
        }
    }
    assert_eq!(store.get_workflow(wf.id).await.unwrap().state, WorkflowState::Succeeded);

    let prune = |ms| PruneFinished { finished_before: at(ms), limit: 100 };
    assert_eq!(store.prune_finished(prune(500)).await.unwrap(), 0, "nothing finished before 0.5 s");
    assert_eq!(
        store.prune_finished(prune(2_500)).await.unwrap(),
        2,
        "the two plain tasks go; the workflow ended later"
    );
    for t in &done {
        assert!(matches!(store.get(t.id).await, Err(StoreError::NotFound)));
    }
    assert_eq!(store.get(waiting.id).await.unwrap().state, TaskState::Ready, "unfinished work stays");
    assert_eq!(store.prune_finished(prune(10_000)).await.unwrap(), 2, "then the decided workflow, whole");
    assert!(matches!(store.get_workflow(wf.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.prune_finished(prune(10_000)).await.unwrap(), 0);
    store.compact().await.unwrap();
    assert_eq!(store.get(waiting.id).await.unwrap().state, TaskState::Ready, "compaction changes no data");
    let p = SubmitTasks { tasks: vec![keyed], idempotency_window: Duration::from_secs(3600), now: at(11_000) };
    let again = store.submit(p).await.unwrap().remove(0);
    assert!(again.created, "a pruned task's idempotency key no longer matches it");
}

pub async fn a_named_lease_has_one_holder_until_it_expires(store: &dyn Store) {
    let take = |holder: &str, ttl_ms: u64, now| AcquireLease {
        name: "maintenance".into(),
        holder: holder.into(),
        ttl: Duration::from_millis(ttl_ms),
        now,
    };
    let a = store.acquire_lease(take("node-a", 5_000, at(0))).await.unwrap();
    assert_eq!(a, LeaseHolder { holder: "node-a".into(), expires_at: at(5_000) });
    let b = store.acquire_lease(take("node-b", 5_000, at(1_000))).await.unwrap();
    assert_eq!(b.holder, "node-a", "a live lease keeps its holder");
    let renewed = store.acquire_lease(take("node-a", 5_000, at(4_000))).await.unwrap();
    assert_eq!(renewed, LeaseHolder { holder: "node-a".into(), expires_at: at(9_000) });
    assert_eq!(store.acquire_lease(take("node-b", 5_000, at(8_999))).await.unwrap().holder, "node-a");
    let b = store.acquire_lease(take("node-b", 5_000, at(9_000))).await.unwrap();
    assert_eq!(b, LeaseHolder { holder: "node-b".into(), expires_at: at(14_000) }, "an expired lease moves on");
    assert_eq!(store.acquire_lease(take("node-a", 0, at(9_500))).await.unwrap().holder, "node-b");
    store.acquire_lease(take("node-b", 0, at(10_000))).await.unwrap();
    let a = store.acquire_lease(take("node-a", 5_000, at(10_000))).await.unwrap();
    assert_eq!(a.holder, "node-a", "a lease given up is free at once");
}

pub async fn a_paused_queue_leases_nothing_until_resumed(store: &dyn Store) {
    let pause =
        |paused| UpdateQueue { queue: "held".into(), paused: Some(paused), weight: None, limits: None, now: at(0) };
    store.update_queue(pause(true)).await.unwrap();
    let held = submit_one(store, spec("held"), at(1)).await;
    submit_one(store, spec("free"), at(1)).await;
    let got = fetch(store, &["held", "free"], 10, at(2)).await;
    assert_eq!(got.iter().map(|t| t.queue.as_str()).collect::<Vec<_>>(), vec!["free"], "the paused queue is skipped");
    let mut ready = store.subscribe(Topic::Ready);
    ready.borrow_and_update();
    store.update_queue(pause(false)).await.unwrap();
    assert!(ready.has_changed().unwrap(), "resuming wakes waiting fetchers");
    let got = fetch(store, &["held"], 10, at(3)).await;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![held.id]);
}

pub async fn queues_are_listed_with_their_counts(store: &dyn Store) {
    submit(store, (0..3).map(|_| spec("a")).collect(), at(0)).await;
    submit_one(store, NewTask { delay: Duration::from_secs(60), ..spec("a") }, at(0)).await;
    let done = fetch(store, &["a"], 2, at(1_000)).await;
    report(store, &done[0], success("1"), at(2_000)).await.unwrap();
    report(store, &done[1], failure(true), at(2_000)).await.unwrap();
    store
        .update_queue(UpdateQueue { queue: "idle".into(), paused: Some(true), weight: None, limits: None, now: at(0) })
        .await
        .unwrap();
    let queues = store.list_queues(at(10_000)).await.unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["a", "idle"]);
    let a = &queues[0];
    assert_eq!((a.ready, a.scheduled, a.running, a.failed, a.paused), (1, 1, 0, 1, false));
    assert_eq!(a.oldest_ready_ms, Some(10_000), "ready since it was submitted at 0");
    assert_eq!(a.succeeded_last_minute, 1);
    assert!(queues[1].paused && queues[1].ready == 0);
    let later = store.list_queues(at(70_000)).await.unwrap();
    assert_eq!(later[0].succeeded_last_minute, 0, "a minute later the success is no longer recent");

    // The depths alone: the same counts, no recent successes, and a queue that holds nothing
    // and has no settings is not listed.
    let depths = store.queue_depths(at(10_000)).await.unwrap();
    let expected: Vec<_> =
        queues.iter().map(|q| taskwarden_core::protocol::QueueInfo { succeeded_last_minute: 0, ..q.clone() }).collect();
    assert_eq!(depths, expected);
    submit_one(store, spec("brief"), at(20_000)).await;
    let brief = fetch(store, &["brief"], 1, at(20_001)).await;
    report(store, &brief[0], success("1"), at(20_002)).await.unwrap();
    let listed = |qs: Vec<taskwarden_core::protocol::QueueInfo>| qs.iter().any(|q| q.name == "brief");
    assert!(listed(store.list_queues(at(30_000)).await.unwrap()), "listed for an hour after its last task");
    assert!(!listed(store.queue_depths(at(30_000)).await.unwrap()), "holds nothing now");
}

pub async fn a_fetch_from_several_queues_follows_their_weights(store: &dyn Store) {
    let weigh = |queue: &str, weight| UpdateQueue {
        queue: queue.into(),
        paused: None,
        weight: Some(weight),
        limits: None,
        now: at(0),
    };
    store.update_queue(weigh("heavy", 3)).await.unwrap();
    store.update_queue(weigh("light", 1)).await.unwrap();
    submit(store, (0..20).map(|_| spec("heavy")).collect(), at(0)).await;
    submit(store, (0..20).map(|_| spec("light")).collect(), at(0)).await;
    let mut got = std::collections::BTreeMap::<String, usize>::new();
    // One task a fetch, as a busy worker with one free slot asks: the share holds across fetches.
    for i in 0..8 {
        for t in fetch(store, &["heavy", "light"], 1, at(1 + i)).await {
            *got.entry(t.queue).or_default() += 1;
        }
    }
    for t in fetch(store, &["light", "heavy"], 8, at(20)).await {
        *got.entry(t.queue).or_default() += 1;
    }
    assert_eq!((got["heavy"], got["light"]), (12, 4), "3:1 by weight");
    let queues = store.list_queues(at(30)).await.unwrap();
    let heavy = queues.iter().find(|q| q.name == "heavy").unwrap();
    assert_eq!((heavy.weight, heavy.ready), (3, 8));
}

/// Stores are built with the default aging: one priority level per ten seconds waited.
pub async fn an_old_low_priority_task_overtakes_newer_high_priority_ones(store: &dyn Store) {
    let low = submit_one(store, NewTask { priority: 0, ..spec("aged") }, at(0)).await;
    let high = |now| async move {
        submit(store, (0..3).map(|_| NewTask { priority: 2, ..spec("aged") }).collect(), at(now)).await
    };
    let early = high(15_000).await;
    let got: Vec<_> = fetch(store, &["aged"], 3, at(15_000)).await.into_iter().map(|t| t.id).collect();
    assert_eq!(
        got,
        early.iter().map(|t| t.id).collect::<Vec<_>>(),
        "after 15 s the low task has aged one level: 1 < 2"
    );
    high(25_000).await;
    let got = fetch(store, &["aged"], 1, at(25_000)).await;
    assert_eq!(got[0].id, low.id, "after 25 s it has aged two levels and waited longest");
}

pub async fn workers_lost_long_ago_are_forgotten_unless_they_hold_a_task(store: &dyn Store) {
    let register = |name: &str, now| RegisterWorker {
        name: name.into(),
        owner: None,
        queues: vec!["q".into()],
        concurrency: 1,
        capacity: Default::default(),
        labels: Default::default(),
        kinds: Vec::new(),
        schemas: Default::default(),
        now,
    };
    let idle = store.register_worker(register("idle", at(0))).await.unwrap();
    let owned = store
        .register_worker(RegisterWorker { owner: Some("token-1".into()), ..register("owned", at(0)) })
        .await
        .unwrap();
    let busy = store.register_worker(register("busy", at(0))).await.unwrap();
    let recent = store.register_worker(register("recent", at(9_000))).await.unwrap();
    submit_one(store, spec("q"), at(0)).await;
    let p = FetchTasks {
        worker_id: busy.id.clone(),
        queues: vec!["q".into()],
        limit: 1,
        wait: Duration::ZERO,
        now: at(1),
        finished: vec![],
    };
    assert_eq!(store.fetch(p).await.unwrap().len(), 1);
    let cut = PruneExpired { keys_before: at(0), workers_before: at(5_000), limit: 100 };
    store.prune_expired(cut).await.unwrap();
    let left: Vec<String> = store.list_workers().await.unwrap().into_iter().map(|w| w.id).collect();
    assert!(!left.contains(&idle.id), "the idle worker lost long ago is forgotten");
    assert!(left.contains(&busy.id), "one still holding a running task is kept");
    assert!(left.contains(&recent.id), "one heard from recently is kept");
    assert!(left.contains(&owned.id), "one a token registered is kept: it may fetch only while registered");
}

pub async fn queues_stay_listed_an_hour_after_their_last_task_and_settings_can_be_forgotten(store: &dyn Store) {
    let names = |queues: Vec<QueueInfo>| queues.into_iter().map(|q| q.name).collect::<Vec<_>>();
    submit_one(store, spec("busy"), at(0)).await;
    let leased = fetch(store, &["busy"], 1, at(1)).await.remove(0);
    report(store, &leased, success("1"), at(2)).await.unwrap();
    let minutes = |m: i64| at(2 + m * 60_000);
    assert!(names(store.list_queues(minutes(30)).await.unwrap()).contains(&"busy".to_owned()), "idle half an hour");
    assert!(!names(store.list_queues(minutes(61)).await.unwrap()).contains(&"busy".to_owned()), "idle past the hour");

    let update = UpdateQueue { queue: "set-up".into(), paused: Some(true), weight: None, limits: None, now: at(0) };
    store.update_queue(update).await.unwrap();
    assert!(names(store.list_queues(minutes(600)).await.unwrap()).contains(&"set-up".to_owned()), "settings keep it");
    store.remove_queue("set-up").await.unwrap();
    assert!(!names(store.list_queues(minutes(600)).await.unwrap()).contains(&"set-up".to_owned()));
    assert!(matches!(store.remove_queue("set-up").await, Err(StoreError::NotFound)));
}

pub async fn an_attempt_is_dated_by_the_run_time_its_worker_reports(store: &dyn Store) {
    submit_one(store, spec("q"), at(0)).await;
    let leased = fetch(store, &["q"], 1, at(1_000)).await.remove(0);
    let lease = leased.lease.as_ref().expect("leased").token;
    let r = Report { ran_us: Some(300_000), done_ago_us: Some(50_000), ..Report::new(leased.id, lease, success("1")) };
    store
        .report(ReportOutcomes { worker_id: None, reports: vec![r], now: at(2_000) })
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let got = store.get(leased.id).await.unwrap();
    assert_eq!((got.history[0].started_at, got.history[0].finished_at), (at(1_650), at(1_950)));
    assert_eq!(got.finished_at, Some(at(2_000)));
}

pub async fn workflows_are_listed_newest_first_by_state_and_name_a_page_at_a_time(store: &dyn Store) {
    use taskwarden_core::workflow::{FailurePolicy, WorkflowState};
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[])])).await.unwrap().id);
    }
    let mut spec = workflow(FailurePolicy::FailFast, &[("only", &[])]);
    spec.plan.name = Some("nightly".into());
    let nightly = store.submit_workflow(spec).await.unwrap().id;
    store.cancel_workflow(CancelWorkflow { id: made[0], now: at(1) }).await.unwrap();

    let list = |state, name: Option<&str>, before, limit| ListWorkflows {
        state,
        name: name.map(str::to_owned),
        before,
        limit,
    };
    let all = store.list_workflows(list(None, None, None, 100)).await.unwrap();
    let ids: Vec<_> = all.workflows.iter().map(|w| w.id).collect();
    assert_eq!(ids, [nightly, made[2], made[1], made[0]], "newest first");
    assert!(all.next.is_none());

    let first = store.list_workflows(list(None, None, None, 2)).await.unwrap();
    assert_eq!(first.workflows.len(), 2);
    let rest = store.list_workflows(list(None, None, first.next, 2)).await.unwrap();
    assert_eq!(rest.workflows.iter().map(|w| w.id).collect::<Vec<_>>(), [made[1], made[0]]);

    let cancelled = store.list_workflows(list(Some(WorkflowState::Cancelled), None, None, 100)).await.unwrap();
    assert_eq!(cancelled.workflows.iter().map(|w| w.id).collect::<Vec<_>>(), [made[0]]);
    let by_name = store.list_workflows(list(None, Some("nightly"), None, 100)).await.unwrap();
    assert_eq!(by_name.workflows.len(), 1);
    assert_eq!((by_name.workflows[0].id, by_name.workflows[0].total), (nightly, 1));
}
