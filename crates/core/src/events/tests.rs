use std::time::Duration;

use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::backoff::Backoff;
use crate::id::{IdGenerator, LeaseToken};
use crate::lifecycle::RetryRequest;
use crate::protocol::Outcome;
use crate::task::NewTask;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn task(max_attempts: u32) -> Task {
    let spec = NewTask {
        queue: "mail".into(),
        kind: "send".into(),
        payload: RawValue::from_string("{}".into()).unwrap(),
        priority: 0,
        tags: vec!["vip".into()],
        idempotency_key: None,
        run_at: None,
        delay: Duration::ZERO,
        expires_at: None,
        max_attempts,
        backoff: Backoff { min: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0, jitter: 0.0 },
        timeout: Duration::from_secs(5),
        lease_timeout: Duration::from_secs(1),
        needs: Default::default(),
        traceparent: None,
    };
    Task::new(IdGenerator::new().next(at(1000), 1), spec, at(1000))
}

fn noted(t: &Task) -> EventType {
    NewEvent::of_task(t).expect("the transition noted an event").event_type
}

#[test]
fn each_transition_notes_what_happened() {
    let mut t = task(2);
    assert_eq!(noted(&t), EventType::TaskSubmitted);
    t.start("w1", LeaseToken(1), at(1100)).unwrap();
    let started = NewEvent::of_task(&t).unwrap();
    assert_eq!((started.event_type, started.attempt), (EventType::TaskStarted, Some(1)));
    assert_eq!(started.data["worker_id"], "w1");
    t.fail(LeaseToken(1), "boom".into(), RetryRequest::Backoff, at(1200), 0.0).unwrap();
    let retrying = NewEvent::of_task(&t).unwrap();
    assert_eq!(retrying.event_type, EventType::TaskRetrying);
    assert_eq!(retrying.data["error"], "boom");
    assert_eq!(retrying.data["run_at"], serde_json::json!(t.run_at));
    t.promote(at(2000)).unwrap();
    assert_eq!(noted(&t), EventType::TaskRetrying, "a promotion notes nothing of its own");
    t.start("w1", LeaseToken(2), at(2000)).unwrap();
    t.expire(at(9000), 0.0).unwrap();
    assert_eq!(noted(&t), EventType::TaskFailed, "the last attempt's lease expiring dead-letters it");
    t.retry(at(9100)).unwrap();
    assert_eq!(noted(&t), EventType::TaskRetried);
    t.start("w2", LeaseToken(3), at(9200)).unwrap();
    t.expire(at(20_000), 0.0).unwrap();
    assert_eq!(noted(&t), EventType::TaskLeaseExpired);
    t.promote(at(30_000)).unwrap();
    t.start("w2", LeaseToken(4), at(30_000)).unwrap();
    let ok = Outcome::Succeeded { result: RawValue::from_string("1".into()).unwrap() };
    t.apply_report(LeaseToken(4), ok, Default::default(), at(30_100), 0.0).unwrap();
    let done = NewEvent::of_task(&t).unwrap();
    assert_eq!(done.event_type, EventType::TaskSucceeded);
    assert_eq!((done.queue.as_deref(), done.kind.as_deref(), done.task_id), (Some("mail"), Some("send"), Some(t.id)));
    assert_eq!(done.tags, ["vip"]);
    assert!(done.event_type.is_final());
}

#[test]
fn cancels_releases_and_expiry_note_theirs() {
    let mut t = task(3);
    t.cancel(at(1001)).unwrap();
    assert_eq!(noted(&t), EventType::TaskCancelled);

    let mut t = task(3);
    t.start("w", LeaseToken(1), at(1001)).unwrap();
    t.cancel(at(1002)).unwrap();
    assert_eq!(noted(&t), EventType::TaskStarted, "a requested cancel is not yet a cancel");
    t.release(LeaseToken(1), at(1003)).unwrap();
    assert_eq!(noted(&t), EventType::TaskCancelled);

    let mut t = task(3);
    t.start("w", LeaseToken(1), at(1001)).unwrap();
    t.release(LeaseToken(1), at(1003)).unwrap();
    assert_eq!(noted(&t), EventType::TaskReleased);

    let mut t = task(3);
    t.expires_at = Some(at(1500));
    t.expire_unstarted(at(1500)).unwrap();
    let expired = NewEvent::of_task(&t).unwrap();
    assert_eq!(expired.event_type, EventType::TaskExpired);
    assert!(expired.data["error"].as_str().unwrap().starts_with("expired"));
}

#[test]
fn a_refused_transition_notes_nothing() {
    let mut t = task(3);
    t.event = None;
    assert!(t.promote(at(5000)).is_err());
    assert!(t.heartbeat(LeaseToken(9), at(5000)).is_err());
    assert_eq!(t.event, None);
}

#[test]
fn event_types_read_back_as_written() {
    for t in EventType::ALL {
        assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
    }
    let err = "task.exploded".parse::<EventType>().unwrap_err();
    assert!(err.contains("task.succeeded"), "{err}");
}

#[test]
fn event_ids_order_by_transaction_then_number() {
    let id = |s: &str| s.parse::<EventId>().unwrap();
    assert_eq!(id("42"), EventId { tx: 0, seq: 42 });
    assert_eq!(id("7-3"), EventId { tx: 7, seq: 3 });
    assert!(id("7-3") < id("7-4") && id("7-900") < id("8-1") && id("99") < id("1-1"));
    for bad in ["", "-", "1-", "-1", "a", "1-2-3", "+4", " 4", "18446744073709551616"] {
        assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn event_ids_round_trip(tx in prop_oneof![Just(0u64), 0u64..], seq in 0u64..) {
        let id = EventId { tx, seq };
        prop_assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        let mut written = Vec::new();
        id.write_to(&mut written);
        prop_assert_eq!(String::from_utf8(written).unwrap(), id.to_string());
    }
}

#[test]
fn a_filter_needs_every_criterion_and_any_value_of_each() {
    let mut t = task(3);
    t.start("w", LeaseToken(1), at(1001)).unwrap();
    let e = NewEvent::of_task(&t).unwrap();
    let all = EventFilter::default();
    assert!(all.matches(&e));
    // The same verdict from the event itself and from the head of its stored JSON.
    let stored = StoredEvent::of(&Event { id: EventId { tx: 0, seq: 1 }, event: e.clone() });
    let f = |f: EventFilter| {
        let verdict = f.matches(&e);
        assert_eq!(f.matches_head(&stored.head().unwrap()), verdict, "{f:?}");
        verdict
    };
    assert!(f(EventFilter { queues: vec!["x".into(), "mail".into()], ..all.clone() }));
    assert!(!f(EventFilter { queues: vec!["x".into()], ..all.clone() }));
    assert!(f(EventFilter { types: vec![EventType::TaskStarted], kinds: vec!["send".into()], ..all.clone() }));
    assert!(!f(EventFilter { types: vec![EventType::TaskFailed], ..all.clone() }));
    assert!(f(EventFilter { task: Some(t.id), tag: Some("vip".into()), ..all.clone() }));
    assert!(!f(EventFilter { tag: Some("other".into()), ..all.clone() }));
    assert!(!f(EventFilter { workflow: Some(t.id), ..all.clone() }));
    let scoped = EventFilter { scope: QueueScope::parse("billing.*").unwrap(), ..all.clone() };
    assert!(!scoped.matches(&e), "outside the reader's queues");
    let worker = NewEvent::worker_joined("w", &[], at(1));
    assert!(all.matches(&worker) && !scoped.matches(&worker), "no queue: only for readers of every queue");
    let mail = EventFilter { scope: QueueScope::parse("mail").unwrap(), ..all };
    assert!(mail.matches(&e));
}

#[test]
fn a_stored_event_is_sent_as_the_event_it_was() {
    let mut t = task(3);
    t.start("w", LeaseToken(1), at(1001)).unwrap();
    let event = Event { id: EventId { tx: 3, seq: 9 }, event: NewEvent::of_task(&t).unwrap() };
    let stored = StoredEvent::of(&event);
    assert_eq!(stored.event_type(), Some(EventType::TaskStarted));
    assert_eq!(stored.parse().unwrap(), event);
    let mut out = Vec::new();
    stored.write_json(&mut out);
    assert_eq!(serde_json::from_slice::<Event>(&out).unwrap(), event);
    assert_eq!(out, serde_json::to_vec(&event).unwrap(), "the same bytes as the event serialized whole");
    assert!(EventFilter::default().is_everything());
    let scoped = EventFilter { scope: QueueScope::parse("mail").unwrap(), ..Default::default() };
    assert!(!scoped.is_everything(), "a reader limited to some queues is filtered");
}

#[test]
fn a_task_event_serializes_as_its_owned_form() {
    let mut t = task(3);
    let mut forms = vec![];
    let mut note = |t: &Task| {
        let e = TaskEvent::of(t).unwrap();
        forms.push((serde_json::to_string(&e).unwrap(), serde_json::to_string(&e.to_new_event()).unwrap()));
    };
    note(&t);
    t.start("w", LeaseToken(1), at(1001)).unwrap();
    note(&t);
    t.tags.clear();
    t.workflow_id = Some(t.id);
    note(&t);
    for (borrowed, owned) in forms {
        assert_eq!(borrowed, owned);
    }
}

fn text() -> impl Strategy<Value = String> {
    // Mostly what needs escaping: quotes, backslashes, control characters, DEL, non-ASCII.
    prop::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\u{7f}'),
            Just('é'),
            Just('😀'),
            (0u8..0x20).prop_map(char::from),
            any::<char>()
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    /// A task event's JSON, written by hand for the stream, is serde's to the byte.
    #[test]
    fn a_task_events_json_is_serdes(
        type_index in 0..EventType::ALL.len(),
        at in prop_oneof![any::<i64>(), 0i64..4_102_444_800_000_000],
        queue in text(),
        kind in text(),
        id in any::<[u8; 16]>(),
        workflow in any::<Option<[u8; 16]>>(),
        attempt in any::<Option<u32>>(),
        tags in prop::collection::vec(text(), 0..3),
        error in prop::option::of(text()),
        fraction in prop::option::of(prop_oneof![any::<f64>(), 0.0..1.0f64]),
        message in prop::option::of(text()),
        run_at in any::<Option<i64>>(),
        run_us in any::<Option<u64>>(),
        state in prop::option::of(text()),
        wait_us in any::<Option<u64>>(),
        worker in prop::option::of(text()),
    ) {
        let event = TaskEvent {
            event_type: EventType::ALL[type_index],
            at: Timestamp::from_micros(at),
            queue: &queue,
            kind: &kind,
            task_id: TaskId::from_bytes(id),
            workflow_id: workflow.map(TaskId::from_bytes),
            attempt,
            tags: &tags,
            data: TaskEventData {
                error: error.as_deref(),
                fraction,
                message: message.as_deref(),
                run_at: run_at.map(Timestamp::from_micros),
                run_us,
                state: state.as_deref(),
                wait_us,
                worker_id: worker.as_deref(),
            },
        };
        let mut ours = "after ".to_owned();
        event.write_json(&mut ours);
        prop_assert_eq!(&ours[6..], serde_json::to_string(&event).unwrap());
    }
}
