use std::time::Duration;

use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::backoff::Backoff;
use crate::id::{IdGenerator, LeaseToken};
use crate::task::NewTask;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn new_task(max_attempts: u32, delay_ms: u64) -> Task {
    let spec = NewTask {
        queue: "q".into(),
        kind: "k".into(),
        payload: raw("{}"),
        priority: 0,
        tags: vec![],
        idempotency_key: None,
        run_at: None,
        delay: Duration::from_millis(delay_ms),
        expires_at: None,
        max_attempts,
        backoff: Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        },
        timeout: Duration::from_secs(5),
        lease_timeout: Duration::from_secs(1),
        needs: Default::default(),
        traceparent: None,
    };
    Task::new(IdGenerator::new().next(Timestamp::from_millis(1000), 7), spec, Timestamp::from_millis(1000))
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn a_task_without_delay_is_ready_and_a_delayed_one_is_scheduled() {
    assert_eq!(new_task(3, 0).state, TaskState::Ready);
    let mut t = new_task(3, 500);
    assert_eq!(t.state, TaskState::Scheduled);
    assert_eq!(t.promote(at(1200)), Err(TransitionError::NotDue(at(1500))));
    t.promote(at(1500)).unwrap();
    assert_eq!(t.state, TaskState::Ready);
}

/// No attempt starts at or after expires_at: a running attempt finishes, but the retry it
/// would need expires instead of starting.
#[test]
fn an_expired_task_is_not_started_and_its_running_attempt_is_not_retried() {
    let mut t = new_task(3, 0);
    t.expires_at = Some(at(2000));
    assert!(t.expire_unstarted(at(1999)).is_err(), "not yet");
    t.start("w", LeaseToken(1), at(1500)).unwrap();
    assert!(t.expire_unstarted(at(2500)).is_err(), "a running task does not expire");
    t.fail(LeaseToken(1), "boom".into(), RetryRequest::Backoff, at(2500), 0.0).unwrap();
    assert_eq!(t.state, TaskState::Scheduled, "the retry waits for its backoff");
    t.promote(at(2600)).unwrap();
    assert!(t.start("w", LeaseToken(2), at(2600)).is_err(), "but may not start");
    t.expire_unstarted(at(2600)).unwrap();
    assert_eq!((t.state, t.finished_at, t.attempts), (TaskState::Expired, Some(at(2600)), 1));
    assert!(t.state.is_terminal());
    t.retry(at(3000)).unwrap();
    assert_eq!((t.state, t.expires_at), (TaskState::Ready, None), "retried by hand, it runs after all");
    t.start("w", LeaseToken(3), at(3000)).unwrap();
}

#[test]
fn retryable_failure_returns_to_scheduled_with_backoff_then_dead_letters() {
    let mut t = new_task(2, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    t.fail(LeaseToken(1), "boom".into(), RetryRequest::Backoff, at(1100), 0.0).unwrap();
    assert_eq!(t.state, TaskState::Scheduled);
    assert_eq!(t.run_at, at(1200), "first backoff is the minimum, 100 ms");
    t.promote(at(1200)).unwrap();
    t.start("w", LeaseToken(2), at(1200)).unwrap();
    t.fail(LeaseToken(2), "boom again".into(), RetryRequest::Backoff, at(1300), 0.0).unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.error.as_deref(), Some("boom again"));
    assert_eq!(t.history.len(), 2);
}

#[test]
fn stale_lease_cannot_complete_after_expiry_and_reassignment() {
    let mut t = new_task(3, 0);
    t.start("w1", LeaseToken(1), at(1000)).unwrap();
    assert_eq!(t.expire(at(1500), 0.0), Err(TransitionError::LeaseActive));
    let a = t.expire(at(2000), 0.0).unwrap();
    assert_eq!(a.outcome, AttemptOutcome::TimedOut);
    t.promote(at(2100)).unwrap();
    t.start("w2", LeaseToken(2), at(2100)).unwrap();
    assert_eq!(t.succeed(LeaseToken(1), raw("1"), at(2200)).unwrap_err(), TransitionError::LeaseLost);
    t.succeed(LeaseToken(2), raw("2"), at(2300)).unwrap();
    assert_eq!(t.result.as_ref().unwrap().get(), "2");
    assert_eq!(t.state, TaskState::Succeeded);
}

#[test]
fn heartbeats_extend_the_lease_but_not_past_the_deadline() {
    let mut t = new_task(3, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    let deadline = t.lease.as_ref().unwrap().deadline;
    assert_eq!(deadline, at(1000 + 5000 + 1000));
    for now in (1500..10_000).step_by(500) {
        if t.heartbeat(LeaseToken(1), at(now)).is_err() {
            break;
        }
    }
    assert_eq!(t.lease.as_ref().unwrap().expires_at, deadline);
}

#[test]
fn cancelling_a_running_task_is_a_request_seen_in_the_heartbeat() {
    let mut t = new_task(3, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    assert_eq!(t.cancel(at(1100)), Ok(Cancellation::Requested));
    assert_eq!(t.heartbeat(LeaseToken(1), at(1200)), Ok(true));
    t.acknowledge_cancel(LeaseToken(1), at(1300)).unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert!(t.cancel(at(1400)).is_err());
}

#[test]
fn manual_retry_of_a_dead_letter_grants_a_fresh_budget() {
    let mut t = new_task(1, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    t.fail(LeaseToken(1), "x".into(), RetryRequest::Backoff, at(1100), 0.0).unwrap();
    assert_eq!(t.state, TaskState::Failed);
    t.retry(at(1200)).unwrap();
    assert_eq!(t.state, TaskState::Ready);
    assert_eq!(t.attempt_limit, 2);
    assert!(t.retry(at(1300)).is_err(), "only failed or cancelled tasks can be retried");
}

#[test]
fn a_workflow_rerun_waits_for_its_parents_with_a_fresh_budget_and_its_history_kept() {
    let mut t = new_task(1, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    t.fail(LeaseToken(1), "x".into(), RetryRequest::Backoff, at(1100), 0.0).unwrap();
    t.rerun(true, at(1200)).unwrap();
    assert_eq!((t.state, t.run_at), (TaskState::Scheduled, Timestamp::NEVER), "waits for its parents");
    assert_eq!((t.attempt_limit, t.history.len(), t.error.as_deref()), (2, 1, None));
    assert!(t.promote(at(9_999_999)).is_err(), "no clock releases it, only its parents");
    t.dependencies_met(at(1300)).unwrap();
    assert_eq!(t.state, TaskState::Ready);
    assert!(t.rerun(false, at(1400)).is_err(), "only failed or cancelled tasks run again");

    let mut cancelled = new_task(1, 0);
    cancelled.cancel(at(1000)).unwrap();
    cancelled.rerun(false, at(1100)).unwrap();
    assert_eq!(cancelled.state, TaskState::Ready, "nothing to wait for: ready at once");
}

#[test]
fn released_attempts_do_not_consume_the_budget() {
    let mut t = new_task(1, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    t.release(LeaseToken(1), at(1100)).unwrap();
    assert_eq!(t.state, TaskState::Ready);
    t.start("w", LeaseToken(2), at(1200)).unwrap();
    t.fail(LeaseToken(2), "x".into(), RetryRequest::Never, at(1300), 0.0).unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.attempts, 2);
}

#[derive(Clone, Debug)]
enum Op {
    Promote,
    Start(u64),
    Heartbeat(u64),
    Progress(u64),
    Succeed(u64),
    Fail(u64, u8),
    Cancel,
    AckCancel(u64),
    Release(u64),
    Expire,
    Retry,
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    // Tokens are drawn from a small set so that some calls hold the current lease and some do not.
    let token = 0u64..4;
    prop_oneof![
        Just(Op::Promote),
        token.clone().prop_map(Op::Start),
        token.clone().prop_map(Op::Heartbeat),
        token.clone().prop_map(Op::Progress),
        token.clone().prop_map(Op::Succeed),
        (token.clone(), 0u8..3).prop_map(|(t, r)| Op::Fail(t, r)),
        Just(Op::Cancel),
        token.clone().prop_map(Op::AckCancel),
        token.prop_map(Op::Release),
        Just(Op::Expire),
        Just(Op::Retry),
        (1u32..5000).prop_map(Op::Wait),
    ]
}

fn snapshot(t: &Task) -> String {
    serde_json::to_string(t).unwrap()
}

fn apply(t: &mut Task, op: &Op, now: Timestamp) -> Result<(), TransitionError> {
    let retry = |r: u8| match r {
        0 => RetryRequest::Backoff,
        1 => RetryRequest::After(Duration::from_millis(50)),
        _ => RetryRequest::Never,
    };
    match *op {
        Op::Promote => t.promote(now),
        Op::Start(k) => t.start("w", LeaseToken(k), now).map(|_| ()),
        Op::Heartbeat(k) => t.heartbeat(LeaseToken(k), now).map(|_| ()),
        Op::Progress(k) => t.report_progress(LeaseToken(k), Progress { fraction: 0.5, message: None }, now),
        Op::Succeed(k) => t.succeed(LeaseToken(k), raw("true"), now).map(|_| ()),
        Op::Fail(k, r) => t.fail(LeaseToken(k), "e".into(), retry(r), now, 0.3).map(|_| ()),
        Op::Cancel => t.cancel(now).map(|_| ()),
        Op::AckCancel(k) => t.acknowledge_cancel(LeaseToken(k), now).map(|_| ()),
        Op::Release(k) => t.release(LeaseToken(k), now).map(|_| ()),
        Op::Expire => t.expire(now, 0.3).map(|_| ()),
        Op::Retry => t.retry(now),
        Op::Wait(_) => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever sequence of calls arrives, the task stays consistent, refused calls change
    /// nothing, and terminal states are left only by an explicit retry.
    #[test]
    fn any_sequence_of_calls_keeps_the_task_consistent(
        max_attempts in 1u32..5,
        delay_ms in 0u64..2000,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut t = new_task(max_attempts, delay_ms);
        let mut now = 1000i64;
        let mut successes = 0;
        for op in &ops {
            if let Op::Wait(ms) = op { now += i64::from(*ms); }
            let before = t.clone();
            let result = apply(&mut t, op, at(now));
            match &result {
                Err(_) => prop_assert_eq!(snapshot(&before), snapshot(&t), "a refused {:?} changed the task", op),
                Ok(()) => {
                    if before.state.is_terminal() && !matches!(op, Op::Retry | Op::Wait(_)) {
                        prop_assert!(false, "{:?} moved a task out of terminal state {}", op, before.state);
                    }
                    if before.state == TaskState::Succeeded {
                        prop_assert_eq!(t.state, TaskState::Succeeded, "succeeded is final");
                    }
                }
            }
            if before.state != TaskState::Succeeded && t.state == TaskState::Succeeded { successes += 1; }

            // Invariants that hold after every step.
            prop_assert_eq!(t.state == TaskState::Running, t.lease.is_some());
            prop_assert!(t.attempts <= t.attempt_limit, "{} attempts > limit {}", t.attempts, t.attempt_limit);
            prop_assert_eq!(t.state.is_terminal(), t.finished_at.is_some());
            let running = u32::from(t.state == TaskState::Running);
            prop_assert_eq!(t.history.len() as u32 + running, t.attempts);
            if let Some(lease) = &t.lease {
                prop_assert_eq!(lease.attempt, t.attempts);
                prop_assert!(lease.expires_at <= lease.deadline);
            }
            if t.state == TaskState::Succeeded { prop_assert!(t.result.is_some()); }
            if t.state == TaskState::Ready { prop_assert!(t.run_at <= at(now)); }
        }
        prop_assert!(successes <= 1, "a task reached succeeded {} times", successes);
    }

    /// Only the holder of the current lease can act on a running task.
    #[test]
    fn a_wrong_token_is_always_refused(current in 0u64..1000, other in 0u64..1000) {
        prop_assume!(current != other);
        let mut t = new_task(3, 0);
        t.start("w", LeaseToken(current), at(1000)).unwrap();
        let before = snapshot(&t);
        prop_assert_eq!(t.heartbeat(LeaseToken(other), at(1001)), Err(TransitionError::LeaseLost));
        prop_assert_eq!(t.succeed(LeaseToken(other), raw("1"), at(1001)).unwrap_err(), TransitionError::LeaseLost);
        prop_assert_eq!(t.fail(LeaseToken(other), "e".into(), RetryRequest::Never, at(1001), 0.0).unwrap_err(), TransitionError::LeaseLost);
        prop_assert_eq!(t.release(LeaseToken(other), at(1001)).unwrap_err(), TransitionError::LeaseLost);
        prop_assert_eq!(before, snapshot(&t));
    }
}

/// A prefetched task waited for a slot, then its outcome waited to be carried: the attempt is
/// dated by what the handler ran, not by the lease and the report's arrival.
#[test]
fn a_report_with_the_workers_timing_dates_the_attempt_by_its_handler() {
    let ms = Duration::from_millis;
    let success = || crate::protocol::Outcome::Succeeded { result: raw("1") };
    let mut t = new_task(3, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    let timing = RunTiming { ran: Some(ms(300)), done_ago: Some(ms(50)) };
    let a = t.apply_report(LeaseToken(1), success(), timing, at(2000), 0.0).unwrap();
    assert_eq!((a.started_at, a.finished_at), (at(1650), at(1950)));
    assert_eq!((t.history[0].started_at, t.history[0].finished_at), (at(1650), at(1950)));
    assert_eq!(t.finished_at, Some(at(2000)), "the task itself finished when it was recorded");

    // Never outside the lease: a slow clock on the worker cannot date it before it was leased.
    let mut t = new_task(3, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    let timing = RunTiming { ran: Some(ms(5000)), done_ago: Some(ms(9000)) };
    let a = t.apply_report(LeaseToken(1), success(), timing, at(2000), 0.0).unwrap();
    assert_eq!((a.started_at, a.finished_at), (at(1000), at(1000)));

    // Without timing, lease to arrival as before.
    let mut t = new_task(3, 0);
    t.start("w", LeaseToken(1), at(1000)).unwrap();
    let a = t.apply_report(LeaseToken(1), success(), RunTiming::default(), at(2000), 0.0).unwrap();
    assert_eq!((a.started_at, a.finished_at), (at(1000), at(2000)));
}
